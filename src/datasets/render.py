"""Inspect what the model sees: `render` (per-sample encoded view) and `stats` (dataset shape and lengths).

Both encode rows with ms-swift's own template for the config's model, exactly as training does
(the same builder, image loader and, with `--augment`, augmentation), so what they show is what
trains. They import ms-swift lazily: the data layer stays importable without torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from src.config import ConfigError
from src.config.atomic import write_then_rename
from src.config.schema import where
from src.datasets import kinds as geometry_kinds
from src.datasets.health import check_sample
from src.datasets.plan import data_seed, plan_data
from src.datasets.rows import GroundingRowsDataset
from src.datasets.run_config import LoadedRun

from .builders import ROW_GEOMETRY_KEY, ROW_SOURCE_KEY
from .contract import Record
from .images import load_image


def _template_for(cfg):
    from swift import get_processor, get_template  # heavy

    processor = get_processor(cfg.swift["model"], model_type=cfg.swift.get("model_type"))
    template = get_template(processor, template_type=cfg.swift.get("template"))
    template.set_mode("train")
    return template, processor


def _dataset(run: LoadedRun, plan, split: str, augment: bool) -> GroundingRowsDataset:
    samples = plan.train_samples if split == "train" else plan.val_samples
    ops = run.augment_ops if augment else []
    prob = run.cfg.custom.augment_prob if augment else 0.0
    return GroundingRowsDataset(samples, plan.builder, augment_ops=ops, augment_prob=prob,
                                seed=data_seed(run.cfg))


def _planned(run: LoadedRun, split: str, augment: bool):
    """(cfg, plan, dataset) for a split of a run resolved once (env applied, offline)."""
    cfg = run.cfg
    plan = plan_data(cfg, preprocessor=run.preprocessor)
    if split == "val" and not plan.val_samples:
        raise ConfigError(f"{where(cfg, 'custom.val_jsonl')}no validation records (`custom.val_jsonl` is not set): "
                          f"set it, or render `--split train`")
    return cfg, plan, _dataset(run, plan, split, augment)


def prepare(run: LoadedRun, split: str, augment: bool):
    """(cfg, plan, dataset, template, processor) for a split of a run resolved once (env applied, offline)."""
    cfg, plan, dataset = _planned(run, split, augment)
    return cfg, plan, dataset, *_template_for(cfg)


def render_paths(out: Path) -> tuple[Path, Path]:
    """What `render` writes beside `out`: the samples' records `<out stem>.records.jsonl` and their images
    `<out stem>_images/`."""
    return out.parent / f"{out.stem}.records.jsonl", out.parent / f"{out.stem}_images"


def image_tokens_per_image(encoded: dict[str, Any], merge_size: int) -> list[int]:
    """Image tokens each image of an encoded sample takes: prod(grid_thw) / merge_size**2."""
    grid = encoded.get("image_grid_thw")
    if grid is None:
        return []
    grid = np.asarray(grid.tolist() if hasattr(grid, "tolist") else grid, dtype=np.int64).reshape(-1, 3)
    return [int(v) // merge_size**2 for v in grid.prod(axis=1)]


def _images(row: dict) -> list:
    """The row's images as PIL images (a plain image travels as its path; see src/datasets/rows.py)."""
    return [load_image(image) if isinstance(image, str) else image for image in row["images"]]


RENDER_IMAGE_NAME = re.compile(r"\d{6}_\d+\.png")  # `<sample index>_<image index>.png`: render's own names


def _save_images(images: list, index: int, image_dir: Path) -> list[str]:
    paths = []
    for k, image in enumerate(images):
        path = image_dir / f"{index:06d}_{k}.png"
        with write_then_rename(path, "wb") as fh:
            image.save(fh, format="PNG")
        paths.append(str(path))
    return paths


def _remove_earlier_renders(image_dir: Path, written: set[str]) -> list[Path]:
    """Remove the images of `image_dir` that bear render's own names and that this render did not write (an
    earlier, longer render's); return them. Any other file there is left as it is."""
    stale = [p for p in image_dir.iterdir()
             if p.is_file() and RENDER_IMAGE_NAME.fullmatch(p.name) and str(p) not in written]
    for path in stale:
        path.unlink()
    return stale


def render(run: LoadedRun, out: Path, *, split: str = "train", limit: int = 20, augment: bool = False,
           track: Callable[[Iterable], Iterable] | None = None) -> dict:
    """Write one JSON line per sample of `run` (its config, builder and augmentation as resolved once) to `out`
    and the samples' records (images saved beside `out`) to `<out stem>.records.jsonl`, drawable with
    `python -m src.vis --gt`. Returns counts. `track` wraps the loop over samples (a progress bar).
    A rendered record whose image lies inside `<out stem>_images/` is refused (UsageError) before anything is
    written: its image would be written over while it is read. The two JSONL files are written whole or not at
    all; once they are, images of render's own names (`NNNNNN_K.png`) there that this render did not write (an
    earlier, longer render's) are removed, and any other file is left."""
    from .output_paths import refuse_images_inside

    cfg, _, dataset = _planned(run, split, augment)
    records_out, image_dir = render_paths(out)
    count = min(limit, len(dataset))
    refuse_images_inside((r for group, _ in dataset.samples[:count] for r in group), image_dir, "render images")
    template, processor = _template_for(cfg)
    tokenizer, merge_size = processor.tokenizer, processor.image_processor.merge_size
    image_dir.mkdir(parents=True, exist_ok=True)
    unhealthy, written = 0, set()
    # Both files are written whole or not at all: an interrupted `--overwrite` keeps the earlier render's.
    with write_then_rename(out) as fh, write_then_rename(records_out) as rec_fh:
        indices = range(count)
        for index in (track(indices) if track else indices):
            row = dataset[index]
            encoded = template.encode(row)
            labels = [t for t in encoded["labels"] if t != -100]
            images = _images(row)
            saved = _save_images(images, index, image_dir)
            written.update(saved)
            geometry = json.loads(row[ROW_GEOMETRY_KEY])
            problems = check_sample(row, encoded, tokenizer, merge_size=merge_size, emit_norm=cfg.custom.emit_norm,
                                    grounding=dataset.builder.answers_with_geometry)
            unhealthy += bool(problems)
            fh.write(json.dumps({
                "index": index,
                "source": row[ROW_SOURCE_KEY],
                "images": [{"path": p, "width": img.width, "height": img.height}
                           for p, img in zip(saved, images, strict=True)],
                "messages": row["messages"],
                "input_text": tokenizer.decode(encoded["input_ids"], skip_special_tokens=False),
                "target_text": tokenizer.decode(labels, skip_special_tokens=False),
                "image_tokens": image_tokens_per_image(encoded, merge_size),
                "n_tokens": len(encoded["input_ids"]),
                "geometry_px": geometry,
                "health_problems": problems,
            }, ensure_ascii=False) + "\n")
            for path, image_geometry in zip(saved, geometry, strict=True):
                rec_fh.write(json.dumps(_drawable_record(path, image_geometry), ensure_ascii=False) + "\n")
    _remove_earlier_renders(image_dir, written)  # only once the new render is whole
    return {"samples": count, "unhealthy": unhealthy, "out": str(out),
            "records": str(records_out), "images": str(image_dir)}


def _drawable_record(image_path: str, image_geometry: dict) -> dict:
    objects = [{o["kind"]: o["points"], **({"desc": o["desc"]} if o["desc"] else {}),
                **({"ignore": True} if o.get("ignore") else {})} for o in image_geometry["objects"]]
    return {"images": [image_path], "objects": objects, "width": image_geometry["width"],
            "height": image_geometry["height"]}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    return {"min": float(arr.min()), "p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max()), "mean": float(arr.mean())}


def _histogram(values: list[float], title: str, path: Path, limit_line: float | None = None) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.hist(values, bins=min(30, max(5, len(set(values)))), color="#4477aa")
    if limit_line is not None:
        axes.axvline(limit_line, color="#cc3311", linestyle="--", label=f"max length {int(limit_line)}")
        axes.legend()
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _answered(record: Record) -> int:
    return sum(not o.ignore for o in record.objects)


def dataset_stats(records: list[Record], token_lengths: list[int], max_length: int | None,
                  all_ignored: int = 0) -> dict[str, Any]:
    """Records, objects per image and per geometry kind (ignore regions counted apart: `objects` are the answered
    ones), image sizes
    and token lengths (percentiles, share over `max_length`); `all_ignored` records were left out of the
    samples (every object an ignore region)."""
    over = sum(n > max_length for n in token_lengths) / len(token_lengths) if max_length and token_lengths else 0.0
    return {
        "records": len(records),
        "objects": sum(_answered(r) for r in records),
        "ignore_regions": sum(len(r.objects) - _answered(r) for r in records),
        "records_all_ignored": all_ignored,
        "objects_by_kind": {key: sum(o.kind == key and not o.ignore for r in records for o in r.objects)
                            for key in geometry_kinds.KEYS},
        "objects_per_image": _percentiles([_answered(r) for r in records]),
        "width": _percentiles([r.width for r in records]),
        "height": _percentiles([r.height for r in records]),
        "token_length": _percentiles(token_lengths),
        "max_length": max_length,
        "share_over_max_length": over,
    }


def stats(run: LoadedRun, out_dir: Path, *, split: str = "train", limit: int | None = None,
          track: Callable[[Iterable], Iterable] | None = None) -> dict[str, Any]:
    """Compute `dataset_stats` for a split of `run` (encoding up to `limit` samples), write stats.json and
    histograms. `track` wraps the encoding loop (a progress bar)."""
    cfg, plan, dataset, template, _ = prepare(run, split, augment=False)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    indices = range(count)
    lengths = [len(template.encode(dataset[i])["input_ids"]) for i in (track(indices) if track else indices)]
    records = list({id(r): r for group, _ in dataset.samples[:count] for r in group}.values())
    max_length = cfg.global_max_length or cfg.swift.get("max_length")
    key = "custom.train_jsonl" if split == "train" else "custom.val_jsonl"
    result = dataset_stats(records, lengths, max_length,
                           sum(len(sources) for k, sources in plan.all_ignored if k == key))
    out_dir.mkdir(parents=True, exist_ok=True)
    result["histograms"] = [
        str(_histogram([_answered(r) for r in records], "objects per image", out_dir / "objects_per_image.png")),
        str(_histogram(lengths, "tokens per sample", out_dir / "token_lengths.png", max_length)),
        str(_histogram([r.width * r.height / 1e6 for r in records], "image size (megapixels)",
                       out_dir / "image_megapixels.png")),
    ]
    (out_dir / "stats.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result
