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
