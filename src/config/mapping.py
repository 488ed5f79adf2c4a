"""The translation of a validated ProjectConfig into `SftArguments` keyword arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .jsonl import jsonl_files
from .schema import ProjectConfig


def to_sft_kwargs(cfg: ProjectConfig) -> dict[str, Any]:
    """Keyword arguments for ms-swift's `SftArguments`, derived from `cfg` (and, for a cached dataset,
    from whether the cache holds a `val` split: the one look at the disk).

    `tuner.train_type` is already `tuner_type`; the data keys become `dataset`/`val_dataset`
    (the project loads them itself, see src/sft.py); `deepspeed.*` becomes `deepspeed`;
    `global_max_length` sets the template's `max_length` and the model's `max_model_len`;
    `custom.cached_dataset` replaces the data with ms-swift's cached dataset (lazy tokenisation off);
    TensorBoard logs go to `<runs folder>/tb/<run>` (beside the run directories) unless
    `training.logging_dir` says otherwise.
    """
    kwargs = dict(cfg.swift)
    kwargs["dataset"] = jsonl_files(cfg.custom.train_jsonl)
    kwargs["val_dataset"] = jsonl_files(cfg.custom.val_jsonl, "custom.val_jsonl")
    if cfg.custom.cached_dataset:  # rows already encoded: ms-swift loads them, nothing is tokenised again
        cache = Path(cfg.custom.cached_dataset)
        kwargs.update(dataset=[], val_dataset=[], lazy_tokenize=False, cached_dataset=[str(cache / "train")],
                      cached_val_dataset=[str(cache / "val")] if (cache / "val").is_dir() else [])
    if cfg.deepspeed.enabled:
        kwargs["deepspeed"] = cfg.deepspeed.config
    if kwargs.get("logging_dir") is None and kwargs.get("output_dir"):
        run_dir = Path(kwargs["output_dir"])
        kwargs["logging_dir"] = str(run_dir.parent / "tb" / run_dir.name)
    if cfg.global_max_length is not None:
        kwargs["max_length"] = cfg.global_max_length
        kwargs["max_model_len"] = cfg.global_max_length
    return kwargs
