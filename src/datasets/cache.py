"""The pre-encoded cache: rows encoded once by ms-swift's template and saved with ms-swift's own cached
dataset format (`swift export --to_cached_dataset`), so that a later run skips encoding.

`python -m src.datasets cache --config CFG --out DIR` writes DIR/train, DIR/val (with a validation split only)
and DIR/cache_info.json. They are built in a sibling folder and moved into DIR at the end, cache_info.json
last: a rebuild that stops half-way leaves the earlier cache whole, or no cache_info.json, never a mix, and
an earlier val/ never outlives a rebuild without one.
A run uses it with `custom.cached_dataset: DIR`; the run refuses a cache whose fingerprint (the data
files' contents, the prompt and answer settings, the template and image settings, the image loader's version)
differs from its own config, so a stale cache is never trained on. A cache holds fixed encodings, the images'
pixels included: no augmentation, and an image file replaced after the build is not seen until a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from src.config import ConfigError
from src.config.jsonl import jsonl_files
from src.datasets.answer import ANSWER_VERSION
from src.datasets.images import IMAGE_LOADER_VERSION
from src.datasets.map_procs import in_process_num_proc
from src.datasets.plan import plan_data
from src.datasets.rows import GroundingRowsDataset, arrow_rows

CACHE_INFO = "cache_info.json"
PARTS = ("train", "val")
"""The folders of a cache (ms-swift's saved datasets) beside CACHE_INFO; a rebuild replaces these three only."""
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
        # The cache holds the pixels as the loader gave them (a tRNS colour, 16-bit grey): another loader, other pixels.
        "image_loader": IMAGE_LOADER_VERSION,
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


def foreign_parts(out_dir: Path) -> list[Path]:
    """`out_dir` when it is a file, and the `train`/`val` entries of `out_dir` that are not a saved dataset (a
    user's folder of that name): what a build must not replace."""
    if out_dir.exists() and not out_dir.is_dir():
        return [out_dir]
    return [path for path in (out_dir / part for part in PARTS)
            if path.exists() and not (path.is_dir() and (path / "state.json").is_file())]


def _move_into_place(built: Path, out_dir: Path) -> None:
    """Replace the cache parts of `out_dir` with those of `built` (a folder beside it), CACHE_INFO last; the earlier
    parts go into `built` (removed with it). Every other file of `out_dir` stays."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CACHE_INFO).unlink(missing_ok=True)  # from here until the end, no cache a run would take
    earlier = built / "earlier"
    earlier.mkdir()
    for part in PARTS:
        if (out_dir / part).exists():
            os.replace(out_dir / part, earlier / part)
    for part in PARTS:
        if (built / part).exists():
            os.replace(built / part, out_dir / part)
    os.replace(built / CACHE_INFO, out_dir / CACHE_INFO)


def build_cache(run, out_dir: Path) -> dict[str, Any]:
    """Encode every row of the splits of `run` (a `LoadedRun`: the config and its preprocessor, resolved once)
    with ms-swift's template and save them as its cached dataset in `out_dir`: built in a folder beside it and
    moved in at the end (`_move_into_place`), so an earlier cache there stays whole until then and none of it
    (a `val/` the new one has not) is left."""
    cfg = run.cfg
    if cfg.custom.cached_dataset:
        raise ConfigError(f"{cfg.merged.files[-1]}: unset `custom.cached_dataset` to build the cache the config "
                          f"describes")
    foreign = foreign_parts(out_dir)
    if foreign:
        raise ConfigError(f"{foreign[0]}: not a cache's (no saved dataset there): the cache would replace it; "
                          f"choose another --out")
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
    beside = out_dir.resolve()  # `--out .` too: the folder beside it, on the same file system (a rename)
    beside.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".building", dir=beside.parent))
    try:
        args = ExportArguments(
            model=swift["model"], model_type=swift.get("model_type"), template=swift.get("template"),
            max_length=cfg.global_max_length or swift.get("max_length"), strict=True, to_cached_dataset=True,
            dataset=jsonl_files(cfg.custom.train_jsonl), output_dir=str(built), exist_ok=True,
            dataset_num_proc=in_process_num_proc(swift.get("dataset_num_proc", 1)))
        GroundingCacheExport(args).main()
        info = {"fingerprint": cache_fingerprint(cfg), "train_rows": len(plan.train_samples),
                "val_rows": len(plan.val_samples)}
        (built / CACHE_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
        _move_into_place(built, out_dir)
    finally:
        shutil.rmtree(built, ignore_errors=True)  # what failed to build, or the earlier parts
    return {"out": str(out_dir), **{k: v for k, v in info.items() if k != "fingerprint"}}
