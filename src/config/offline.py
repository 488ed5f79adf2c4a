"""Offline by default: the hub variables the project sets before transformers, datasets or ms-swift load.

Set by the project (not the user's shell) so that no run can reach a model hub. A user who wants a
download does it before training (see README), not during it.
"""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Force the offline variables into `environ` (default `os.environ`); return what was set.

    Forced, not defaulted: a shell that exports HF_HUB_OFFLINE=0 must not make a run reach the hub.
    """
    target = os.environ if environ is None else environ
    target.update(OFFLINE_ENV)
    return dict(OFFLINE_ENV)


def load_config_for_run(config, base_config=None, *, check_paths: bool = True, on_cpu: bool = False):
    """Set the offline variables, load and check `config` (with the CPU overlay when `on_cpu`), then apply
    its `env:` section; return the config.

    Every entry point calls this before ms-swift is imported, because ms-swift and qwen_vl_utils read
    some of these variables (IMAGE_MAX_TOKEN_NUM, ...) when they load. Raises ConfigError.
    """
    from src.config import load_project_config

    apply_offline_env()
    cfg = load_project_config(config, base_config, check_paths=check_paths, on_cpu=on_cpu)
    os.environ.update(cfg.env)
    return cfg
