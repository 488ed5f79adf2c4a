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


# ---------------------------------------------------------------------------- whole checkpoints

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file `path` is not whole (cut short, or no safetensors header), or None. Reads its
    header only: a file cut by a full disk or a kill ends before the last tensor's data."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes: too short for a safetensors header (cut short while written?)"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return f"{size} bytes, but its header alone says {length + 8}: cut short while written"
            header = json.loads(fh.read(length))
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    except (ValueError, UnicodeDecodeError):
        return "its header is not safetensors' JSON header: damaged, or not a safetensors file"
    if not isinstance(header, dict):
        return "its header is not safetensors' JSON header: damaged, or not a safetensors file"
    ends = [t["data_offsets"][1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and isinstance(t.get("data_offsets"), list)]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"{size} bytes, but its tensors end at byte {needed}: cut short while written"
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (what is missing or torn), or None for a whole checkpoint:
    a `trainer_state.json` that parses, and model or adapter weights (safetensors checked whole, an index's
    shards present) or DeepSpeed's `global_step*` state."""
    import json

    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save did not finish)"
    try:
        parsed = json.loads(state.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError, UnicodeDecodeError):
        parsed = None
    if not isinstance(parsed, dict):
        empty = state.stat().st_size == 0
        return f"{state.name} is {'empty' if empty else 'not whole JSON'} (a torn write)"
    present = [name for name in WEIGHT_FILES if (checkpoint / name).is_file()]
    if not present and not any(p.is_dir() for p in checkpoint.glob("global_step*")):
        return f"no model or adapter weights ({', '.join(WEIGHT_FILES[:3])}, ...)"
    for name in present:
        if name.endswith(".safetensors"):
            problem = safetensors_problem(checkpoint / name)
            if problem:
                return f"{name}: {problem}"
        elif name.endswith(".index.json"):
            try:
                shards = set(json.loads((checkpoint / name).read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{name} is not a whole weight index (a torn write)"
            missing = sorted(s for s in shards if not (checkpoint / s).is_file())
            if missing:
                return f"{name} names shards that are missing: {', '.join(missing[:3])}"
    return None
