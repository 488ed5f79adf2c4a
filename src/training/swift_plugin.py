"""What the model sees travels with the checkpoint: the image budget as an ms-swift plugin file.

ms-swift reads Qwen-VL's image budget (IMAGE_MAX_TOKEN_NUM, ...) from the environment when it loads the
processor, and a checkpoint's `args.json` does not record it. So `swift infer --adapters CKPT` on a
checkpoint trained at 1,024 image tokens would read a 1920x1080 photo at its own default budget (up to
16,384 tokens): the model sees other pixels than it was trained on. ms-swift's `args.json` does carry
`external_plugins`, and `swift infer` / `swift export` import them (before the processor loads) whenever
the command line names none. Training therefore writes `<run dir>/swift_plugin_<digest>.py`, which sets
the training's image budget, and passes it as an external plugin: `args.json` in every checkpoint names it.
The name carries a digest of the file's text, so a file is never rewritten: a run resumed with another
image budget writes a second plugin, and its earlier checkpoints keep naming the budget they were trained at.

Each checkpoint also holds a copy, so a checkpoint moved on its own (where args.json's absolute path no
longer exists and ms-swift stops with `AssertionError: py_dir`) still carries its budget: name the copy
with `--external_plugins`, which ms-swift then takes instead of args.json's.

The plugin only sets what the command's environment leaves unset (an explicit IMAGE_MAX_TOKEN_NUM at
inference wins) and says so when the two differ.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PLUGIN_PREFIX = "swift_plugin_"

# The variables that decide how Qwen-VL images are resized (qwen_vl_utils, as ms-swift patches it):
# token budgets, their legacy pixel forms, and the grid they round to.
VISION_ENV_KEYS = (
    "IMAGE_MAX_TOKEN_NUM", "IMAGE_MIN_TOKEN_NUM", "MAX_PIXELS", "MIN_PIXELS", "MAX_RATIO",
    "SPATIAL_MERGE_SIZE", "IMAGE_FACTOR",
    "VIDEO_MAX_TOKEN_NUM", "VIDEO_MIN_TOKEN_NUM", "VIDEO_MAX_PIXELS", "VIDEO_MIN_PIXELS", "VIDEO_TOTAL_PIXELS",
    "FPS", "FPS_MIN_FRAMES", "FPS_MAX_FRAMES",
)


def vision_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The vision variables set in `environ` (the training's environment after the config's `env:`), by name."""
    return {key: environ[key] for key in VISION_ENV_KEYS if environ.get(key)}


def plugin_source(settings: Mapping[str, str]) -> str:
    """The plugin file's text: sets each of `settings` unless the environment already has it."""
    return (
        '"""Written at training by the grounding project (src/training/swift_plugin.py): the image budget the\n'
        'model was trained with. ms-swift imports this file for `swift infer` / `swift export` because the\n'
        'checkpoint\'s args.json lists it in `external_plugins`; an environment variable set explicitly wins."""\n'
        "import os\n"
        "import warnings\n\n"
        f"TRAINED_WITH = {json.dumps(dict(settings), indent=4, sort_keys=True)}\n\n"
        "for _key, _value in TRAINED_WITH.items():\n"
        "    if os.environ.get(_key, _value) != _value:\n"
        "        warnings.warn(f'{_key}={os.environ[_key]} from the environment; the model was trained with '\n"
        "                      f'{_key}={_value} (images are seen at another size)', stacklevel=1)\n"
        "    os.environ.setdefault(_key, _value)\n"
    )


def plugin_path(run_dir: Path, settings: Mapping[str, str]) -> Path:
    """Where a run's plugin for `settings` lives: absolute (args.json must name it from any working
    directory) and named by a digest of its text (equal settings, equal name; other settings, another file)."""
    digest = hashlib.sha256(plugin_source(settings).encode("utf-8")).hexdigest()[:12]
    return Path(run_dir).resolve() / f"{PLUGIN_PREFIX}{digest}.py"


def with_plugin(kwargs: dict[str, Any], settings: Mapping[str, str]) -> dict[str, Any]:
    """`kwargs` whose `external_plugins` also name the run's plugin for `settings` (after any the config
    gave; an earlier plugin of this project's, as a resumed run's arguments may carry, is replaced)."""
    given = kwargs.get("external_plugins") or []
    given = [given] if isinstance(given, str) else list(given)
    path = plugin_path(Path(kwargs["output_dir"]), settings)
    kept = [p for p in given if not (Path(p).parent == path.parent and Path(p).name.startswith(PLUGIN_PREFIX))]
    return {**kwargs, "external_plugins": [*kept, str(path)]}


def project_plugins(plugins: Sequence[str] | str | None) -> list[Path]:
    """The project's image-budget plugins among ms-swift's `external_plugins` (a config's own are left out)."""
    plugins = [plugins] if isinstance(plugins, str) else list(plugins or [])
    return [Path(p) for p in plugins if Path(p).name.startswith(PLUGIN_PREFIX) and Path(p).is_file()]


def copy_into_checkpoint(checkpoint: Path, plugins: Sequence[str] | str | None) -> list[Path]:
    """Copy the project's plugins named in `plugins` into `checkpoint`, so that a checkpoint moved on its own
    still carries its image budget (`swift infer --adapters CKPT --external_plugins CKPT/<plugin>`).
    Returns the copies."""
    copies = []
    for plugin in project_plugins(plugins):
        copy = Path(checkpoint) / plugin.name
        shutil.copyfile(plugin, copy)
        copies.append(copy)
    return copies


def write_plugin(run_dir: Path, settings: Mapping[str, str]) -> Path:
    """Write the run's plugin file for `settings` unless it is there already (same name, same text);
    returns its path."""
    path = plugin_path(run_dir, settings)
    if not path.is_file():
        path.write_text(plugin_source(settings), encoding="utf-8")
    return path
