"""Code inside a model directory never runs unless the config says so.

ms-swift 4.6 loads configs, processors, tokenizers and models with `trust_remote_code=True` (its `ModelLoader`
default, and a hard-coded `AutoConfig.from_pretrained(..., trust_remote_code=True)` in
`swift/model/model_meta.py` and `swift/pipelines/train/rlhf.py`), so a `configuration_*.py` / `modeling_*.py`
named by `auto_map` in an untrusted model directory would run. Every one of those calls ends in transformers'
`resolve_trust_remote_code`, which each Auto class imports by name: `apply_remote_code_policy` replaces that
name in each such module with one that passes `trust_remote_code=False` unless trusted. transformers then uses
its own code for a model type it knows (Qwen3-VL, Qwen3.5: no remote code in transformers 5) and refuses with
its own message a model that only remote code can load.

Trusted only when the config's `env:` sets `GROUNDING_TRUST_REMOTE_CODE: "1"` (or the shell does).
"""

from __future__ import annotations

import os

TRUST_ENV = "GROUNDING_TRUST_REMOTE_CODE"
_AUTO_MODULES = (
    "transformers.dynamic_module_utils",
    "transformers.models.auto.auto_factory",
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.auto.processing_auto",
    "transformers.models.auto.image_processing_auto",
    "transformers.models.auto.video_processing_auto",
    "transformers.models.auto.feature_extraction_auto",
    "transformers.generation.utils",
)


def remote_code_trusted() -> bool:
    """Whether code shipped in a model directory may run: `$GROUNDING_TRUST_REMOTE_CODE` is 1/true/yes."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def apply_remote_code_policy() -> bool:
    """Make every transformers Auto class (and so ms-swift's loaders) refuse remote code unless
    `remote_code_trusted()`; idempotent, decided again at each call. Imports transformers (heavy): call it
    right before a model, processor or engine is built. Returns whether remote code is trusted."""
    import importlib

    import transformers.dynamic_module_utils as dmu

    original = getattr(dmu, "_grounding_original_resolve", dmu.resolve_trust_remote_code)
    dmu._grounding_original_resolve = original

    def resolve_trust_remote_code(trust_remote_code, *args, **kwargs):
        return original(trust_remote_code if remote_code_trusted() else False, *args, **kwargs)

    for name in _AUTO_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "resolve_trust_remote_code"):
            module.resolve_trust_remote_code = resolve_trust_remote_code
    try:
        from swift.model.register import ModelLoader

        # Only its warnings read this once every resolve above says no; they then tell the truth.
        ModelLoader.default_trust_remote_code = remote_code_trusted()
    except ImportError:
        pass
    return remote_code_trusted()


# The files of a model directory whose `auto_map` names code in it (transformers reads each for its Auto class).
_AUTO_MAP_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json",
                   "video_preprocessor_config.json", "feature_extractor_config.json")


def remote_code_files(model_dir) -> list[str]:
    """The files of `model_dir` whose `auto_map` names code shipped with the model (empty for a directory
    without any, or a path that is not a directory). Reads JSON only; a file that does not parse is skipped
    (transformers itself refuses it)."""
    import json
    from pathlib import Path

    found = []
    for name in _AUTO_MAP_FILES:
        path = Path(model_dir) / name
        try:
            if "auto_map" in json.loads(path.read_text(encoding="utf-8")):
                found.append(str(path))
        except (OSError, ValueError, TypeError):
            continue
    return found
