"""Command line for grounding data: ``python -m src.datasets {synth,validate,convert,render,stats,cache} ...``.

Each subcommand is a ``_add_<name>(subparsers)`` that registers its arguments and sets
``handler``; handlers return the process exit code (0 ok, 1 invalid data, 2 usage error).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------- synth


def _run_synth(args: argparse.Namespace) -> int:
    from .synth import write_synthetic_dataset

    try:
        result = write_synthetic_dataset(
            args.out,
            args.n,
            seed=args.seed,
            val_fraction=args.val_fraction,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    kinds = ", ".join(f"{count} {kind}" for kind, count in result["objects_by_kind"].items())
    print(f"wrote {result['n_train']} train + {result['n_val']} val images to {result['out_dir']}")
    print(f"objects: {result['n_objects']} ({kinds})")
    return EXIT_OK


def _add_synth(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic grounding dataset",
        description="Write DIR/images/*.png, DIR/train.jsonl and DIR/val.jsonl.",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of images in val (default: 0.2)")
    parser.add_argument("--overwrite", action="store_true", help="replace synthetic files in a non-empty DIR")
    parser.set_defaults(handler=_run_synth)


# ---------------------------------------------------------------------------- validate


def _validate_file(path: str, check_images: bool) -> tuple[int, int]:
    """Print the problems and summary of one file; return (records, invalid records)."""
    from .contract import load_records

    records, problems = load_records(path, check_image=check_images)
    for problem in problems:
        print(problem)
    invalid = len({problem.line for problem in problems})
    kinds = Counter(obj.kind for record in records for obj in record.objects)
    clamped = sum(record.clamped for record in records)
    total = len(records) + invalid
    print(
        f"{os.path.abspath(path)}: {total} records, {len(records)} valid, {invalid} invalid; "
        f"objects in valid records: {kinds['bbox_2d']} bbox_2d, {kinds['quad']} quad; "
        f"{clamped} coordinates clamped (within 1 px)"
    )
    return total, invalid


def _run_validate(args: argparse.Namespace) -> int:
    missing = [f for f in args.files if not os.path.isfile(f)]
    for path in missing:
        _err(f"{path}: no such file")
    if missing:
        return EXIT_USAGE
    totals = [_validate_file(path, not args.no_image_check) for path in args.files]
    invalid = sum(bad for _, bad in totals)
    if len(totals) > 1:
        records = sum(count for count, _ in totals)
        print(f"total: {records} records, {records - invalid} valid, {invalid} invalid")
    return EXIT_INVALID if invalid else EXIT_OK


def _add_validate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check JSONL files against the grounding contract",
        description="Print every problem as 'file:line: field: message (value)', then a "
        "summary. Exit 0 if every record is valid, 1 if not, 2 if a file is missing.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE.jsonl")
    parser.add_argument(
        "--no-image-check",
        action="store_true",
        help="skip opening images (faster; sizes and decodability are not checked)",
    )
    parser.set_defaults(handler=_run_validate)


# ---------------------------------------------------------------------------- convert


def _run_convert_coco(args: argparse.Namespace) -> int:
    from .convert_coco import convert_coco_file

    if not args.ann.is_file():
        _err(f"{args.ann}: no such file")
        return EXIT_USAGE
    if not args.images.is_dir():
        _err(f"{args.images}: no such directory")
        return EXIT_USAGE
    try:
        result = convert_coco_file(args.ann, args.images, args.out, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    for problem in result.problems:
        print(problem)
    print(result.summary())
    return EXIT_INVALID if result.skipped_anything else EXIT_OK


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert another annotation format to grounding JSONL",
        description="Convert annotations to the grounding JSONL contract. Exit 0 if everything was "
        "converted, 1 if some images or annotations were skipped (each is printed), 2 on a usage error.",
    )
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    coco = formats.add_parser(
        "coco",
        help="COCO detection JSON",
        description="COCO detection JSON -> JSONL: category names become desc, bbox becomes bbox_2d, a "
        "single 4-point polygon segmentation becomes a quad; crowd/RLE annotations keep their bbox. "
        "Image sizes are checked against the files; a mismatched or missing image is skipped.",
    )
    coco.add_argument("--ann", type=Path, required=True, metavar="FILE.json", help="COCO annotation file")
    coco.add_argument("--images", type=Path, required=True, metavar="DIR", help="directory of the file_names")
    coco.add_argument("--out", type=Path, required=True, metavar="OUT.jsonl", help="JSONL to write")
    coco.add_argument("--overwrite", action="store_true", help="replace OUT.jsonl if it exists")
    coco.set_defaults(handler=_run_convert_coco)


# ---------------------------------------------------------------------------- entry


# ---------------------------------------------------------------------------- render / stats


def _run_render(args: argparse.Namespace) -> int:
    from src.config import ConfigError

    from .loading import DataError
    from .render import render

    if args.out.exists() and not args.overwrite:
        _err(f"{args.out} exists; pass --overwrite to replace it")
        return EXIT_USAGE
    try:
        result = render(args.config, args.out, split=args.split, limit=args.limit, augment=args.augment)
    except (ConfigError, DataError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(f"rendered {result['samples']} sample(s) to {result['out']}")
    print(f"records (draw them: python -m src.vis --gt {result['records']} --out DIR): {result['records']}")
    if result["unhealthy"]:
        print(f"{result['unhealthy']} sample(s) failed the health checks: see `health_problems` in {result['out']}")
        return EXIT_INVALID
    return EXIT_OK


def _add_render(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("render", help="write what the model sees for the first samples of a split",
                                   description="Encode samples with the config's template and write, per sample, "
                                               "the messages, decoded input and target, image tokens and geometry.")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--split", choices=["train", "val"], default="train")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--augment", action="store_true", help="apply the config's augmentation (epoch 0 draw)")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.jsonl")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(handler=_run_render)


def _run_stats(args: argparse.Namespace) -> int:
    from src.config import ConfigError

    from .loading import DataError
    from .render import stats

    try:
        result = stats(args.config, args.out, split=args.split, limit=args.limit)
    except (ConfigError, DataError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    lengths = result["token_length"]
    print(f"records: {result['records']}, objects: {result['objects']}")
    per_image = result["objects_per_image"]
    print(f"objects per image: p50 {per_image.get('p50')}, max {per_image.get('max')}")
    print(f"tokens per sample: p50 {lengths.get('p50')}, p90 {lengths.get('p90')}, max {lengths.get('max')}; "
          f"over max length ({result['max_length']}): {result['share_over_max_length']:.1%}")
    print(f"stats and histograms: {args.out}")
    return EXIT_OK


def _add_stats(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stats", help="records, objects per image, image sizes, token lengths")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--split", choices=["train", "val"], default="train")
    parser.add_argument("--limit", type=int, help="encode only the first N samples")
    parser.add_argument("--out", type=Path, default=Path("stats"), metavar="DIR", help="stats.json and PNGs")
    parser.set_defaults(handler=_run_stats)


def _run_cache(args: argparse.Namespace) -> int:
    from src.config import ConfigError

    from .cache import build_cache
    from .loading import DataError
    from .run_config import load_config_for_run

    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        _err(f"{args.out} is not empty; pass --overwrite to rebuild the cache there")
        return EXIT_USAGE
    try:
        result = build_cache(load_config_for_run(args.config), args.out)
    except (ConfigError, DataError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(f"cached {result['train_rows']} train and {result['val_rows']} val rows in {result['out']}")
    print(f"use it: custom: {{cached_dataset: {result['out']}}}")
    return EXIT_OK


def _add_cache(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="encode a config's data once (ms-swift cached dataset)")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(handler=_run_cache)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m src.datasets`` parser; add a subcommand with one ``_add_*`` call."""
    parser = argparse.ArgumentParser(prog="python -m src.datasets", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(subparsers)
    _add_validate(subparsers)
    _add_convert(subparsers)
    _add_render(subparsers)
    _add_stats(subparsers)
    _add_cache(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
