"""The pre-encoded cache: rows encoded once by ms-swift's template and saved with ms-swift's own cached
dataset format (`swift export --to_cached_dataset`), so that a later run skips encoding.

`python -m src.datasets cache --config CFG --out DIR` writes DIR/train, DIR/val and DIR/cache_info.json.
A run uses it with `custom.cached_dataset: DIR`; the run refuses a cache whose fingerprint (the data
files' contents, the prompt and answer settings, the template and image settings) differs from its
own config, so a stale cache is never trained on. A cache holds fixed encodings: no augmentation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from src.config import ConfigError
from src.config.jsonl import jsonl_files
from src.datasets.answer import ANSWER_VERSION
from src.datasets.map_procs import in_process_num_proc
from src.datasets.plan import plan_data
from src.datasets.rows import GroundingRowsDataset, arrow_rows

CACHE_INFO = "cache_info.json"
# Keys whose value changes what an encoded sample holds.
ENCODING_KEYS = ("template", "max_length", "max_model_len", "truncation_strategy", "model_type")


def _file_digest(path: str | None) -> str | None:
    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_fingerprint(cfg) -> dict[str, Any]:
    """What the encodings of a config depend on: data file digests, answer and prompt settings,
    template settings, the model directory and the `env` (image token limits)."""
    custom = cfg.custom
    return {
        "train_jsonl": [_file_digest(f) for f in jsonl_files(custom.train_jsonl)],
        "val_jsonl": [_file_digest(f) for f in jsonl_files(custom.val_jsonl, "custom.val_jsonl")],
        "emit_norm": custom.emit_norm, "images_per_user_turn": custom.images_per_user_turn,
        "object_order": custom.object_order, "bad_records": custom.bad_records,
        "prompts": {"scheme": cfg.prompts.scheme, "system": cfg.prompts.system, "user": cfg.prompts.user},
        "data_seed": cfg.swift.get("data_seed"),
        "model": cfg.swift.get("model"),
        "encoding": {k: cfg.swift.get(k) for k in ENCODING_KEYS},
        "global_max_length": cfg.global_max_length,
        "env": dict(sorted(cfg.env.items())),
        "answer_version": ANSWER_VERSION,  # the same record answered otherwise (rounding, ignore regions)
    }


def cache_problems(cfg, cache_dir: Path) -> list[str]:
    """Why `cache_dir` cannot serve `cfg` (missing, not a cache, or built from other data or settings)."""
    info_file = cache_dir / CACHE_INFO
    if not (cache_dir / "train").is_dir() or not info_file.is_file():
        return [f"`custom.cached_dataset` = {cache_dir}: not a cache built by `python -m src.datasets cache` "
                f"(no train/ or {CACHE_INFO})"]
    built = json.loads(info_file.read_text(encoding="utf-8"))["fingerprint"]
    now = cache_fingerprint(cfg)
    differ = sorted(k for k in set(built) | set(now) if built.get(k) != now.get(k))
    if differ:
        return [f"`custom.cached_dataset` = {cache_dir} was built from other data or settings ({', '.join(differ)} "
                f"changed): rebuild it with `python -m src.datasets cache --config CFG --out {cache_dir} --overwrite`"]
    return []


def build_cache(run, out_dir: Path) -> dict[str, Any]:
    """Encode every row of the splits of `run` (a `LoadedRun`: the config and its preprocessor, resolved once)
    with ms-swift's template and save them as its cached dataset."""
    cfg = run.cfg
    if cfg.custom.cached_dataset:
        raise ConfigError(f"{cfg.merged.files[-1]}: unset `custom.cached_dataset` to build the cache the config "
                          f"describes")
    plan = plan_data(cfg, preprocessor=run.preprocessor)

    from datasets import Dataset as HfDataset  # heavy
    from swift import ExportArguments
    from swift.pipelines.export.cached_dataset import ExportCachedDataset

    def materialise(samples):
        return HfDataset.from_list(arrow_rows(GroundingRowsDataset(samples, plan.builder)))

    class GroundingCacheExport(ExportCachedDataset):
        def _get_dataset(self):
            val = materialise(plan.val_samples) if plan.val_samples else None
            return materialise(plan.train_samples), val

    swift = cfg.swift
    args = ExportArguments(
        model=swift["model"], model_type=swift.get("model_type"), template=swift.get("template"),
        max_length=cfg.global_max_length or swift.get("max_length"), strict=True, to_cached_dataset=True,
        dataset=jsonl_files(cfg.custom.train_jsonl), output_dir=str(out_dir), exist_ok=True,
        dataset_num_proc=in_process_num_proc(swift.get("dataset_num_proc", 1)))
    GroundingCacheExport(args).main()
    info = {"fingerprint": cache_fingerprint(cfg), "train_rows": len(plan.train_samples),
            "val_rows": len(plan.val_samples)}
    (out_dir / CACHE_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return {"out": str(out_dir), **{k: v for k, v in info.items() if k != "fingerprint"}}
