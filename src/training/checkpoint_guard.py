"""The LoRA checkpoint guard: an adapter checkpoint holds LoRA weights and the modules trained in full
(`modules_to_save`, e.g. the aligner) and nothing else; never the base model.

A checkpoint that breaks this fails the run at the save that wrote it, naming the offending weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

FULL_MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def unexpected_adapter_keys(keys: Iterable[str], modules_to_save: Sequence[str] | None) -> list[str]:
    """Weights of an adapter file that are neither LoRA weights nor inside a `modules_to_save` module."""
    saved_modules = [f".{m}." for m in modules_to_save or []]
    return [k for k in keys if "lora_" not in k and not any(m in f".{k}" for m in saved_modules)]


def check_adapter_checkpoint(checkpoint: Path, modules_to_save: Sequence[str] | None) -> list[str]:
    """Problems of one LoRA checkpoint directory: full-model files, or base weights in the adapter file."""
    from safetensors import safe_open

    problems = [f"{checkpoint / name}: a LoRA checkpoint must not hold the full model"
                for name in FULL_MODEL_FILES if (checkpoint / name).exists()]
    adapter = checkpoint / "adapter_model.safetensors"
    if adapter.is_file():
        with safe_open(str(adapter), "pt") as fh:
            extra = unexpected_adapter_keys(fh.keys(), modules_to_save)
        if extra:
            problems.append(f"{adapter}: {len(extra)} base-model weight(s) outside LoRA and modules_to_save, "
                            f"e.g. {extra[:3]}")
    return problems
