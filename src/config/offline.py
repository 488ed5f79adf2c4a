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


# The variables that decide how Qwen-VL images are resized (the names of src/training/swift_plugin.py's
# VISION_ENV_KEYS, tests/test_config_env.py keeps them equal) and the type ms-swift parses each with
# (`patch_qwen_vl_utils`: float for FPS, int for the rest): `env:` values are checked against it, so
# `IMAGE_MAX_TOKEN_NUM: lots` is refused at load, not inside ms-swift.
VISION_ENV_TYPES: dict[str, type] = {
    **{key: int for key in ("IMAGE_MAX_TOKEN_NUM", "IMAGE_MIN_TOKEN_NUM", "MAX_PIXELS", "MIN_PIXELS", "MAX_RATIO",
                            "SPATIAL_MERGE_SIZE", "IMAGE_FACTOR", "VIDEO_MAX_TOKEN_NUM", "VIDEO_MIN_TOKEN_NUM",
                            "VIDEO_MAX_PIXELS", "VIDEO_MIN_PIXELS", "VIDEO_TOTAL_PIXELS", "FPS_MIN_FRAMES",
                            "FPS_MAX_FRAMES")},
    "FPS": float,
}


def apply_offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Force the offline variables into `environ` (default `os.environ`); return what was set.

    Forced, not defaulted: a shell that exports HF_HUB_OFFLINE=0 must not make a run reach the hub.
    """
    target = os.environ if environ is None else environ
    target.update(OFFLINE_ENV)
    return dict(OFFLINE_ENV)
