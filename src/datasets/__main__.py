"""Command line for grounding data: ``python -m src.datasets {synth,validate,convert,render,stats,cache,rows} ...``.

Each subcommand is a ``_add_<name>(subparsers)`` that registers its arguments and sets ``handler``;
handlers return the exit code of src/cli.py (0 done, 1 a check found problems) or raise a user error
(exit 2, message only).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.cli import (
    EXIT_OK,
    EXIT_PROBLEMS,
    UsageError,
    add_config_args,
    add_overwrite_arg,
    make_parser,
    progress,
    refuse_existing,
    run_main,
)
from src.config import ConfigError, ProjectConfig
from src.config.jsonl import jsonl_files
from src.datasets.contract import GEOMETRY_KINDS


def _config_inputs(args: argparse.Namespace, cfg: ProjectConfig) -> dict[str, Path | None]:
    """The inputs a config-reading command names itself and the data files of its config (as the run resolved
    it): what no output may replace."""
    inputs: dict[str, Path | None] = {"--config": args.config, "--base_config": args.base_config}
    for key in ("train_jsonl", "val_jsonl"):
        try:
            files = jsonl_files(getattr(cfg.custom, key), f"custom.{key}")
        except ConfigError:  # a glob matching no file (paths unchecked): no file of it to protect
            continue
        for i, file in enumerate(files):
            inputs[f"custom.{key}" + (f" (file {i + 1})" if i else "")] = Path(file)
    return inputs


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
            every_kind=args.every_kind,
        )
    except (FileExistsError, ValueError) as exc:  # the documented refusals of write_synthetic_dataset
        raise UsageError(str(exc)) from None
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
    parser.add_argument("--val_fraction", "--val-fraction", type=float, default=0.2,
                        help="share of images in val (default: 0.2)")
    parser.add_argument("--overwrite", action="store_true", help="replace synthetic files in a non-empty DIR")
    parser.add_argument("--every_kind", "--every-kind", action="store_true",
                        help="also dots (point_2d) and triangles (polygon): every geometry kind in one set")
    parser.set_defaults(handler=_run_synth)


# ---------------------------------------------------------------------------- validate


def _validate_file(path: str, check_images: bool, revalidate: bool) -> tuple[int, int]:
    """Print the problems and summary of one file; return (records, invalid records)."""
    from .columns import all_ignored
    from .loading import validated_records
    from .verdicts import VerdictStore

    track = functools.partial(progress, desc=f"validating {os.path.basename(path)}", unit="line",
                              weight=lambda chunk: chunk[2])
    # A full check: every image decoded (training reads headers only, so its verdicts are stored apart).
    records, problems, stored = validated_records(path, check_image=check_images,
                                                  store=VerdictStore(), revalidate=revalidate, track=track)
    if stored:
        print(f"{os.path.abspath(path)}: unchanged since it was validated; the stored verdict follows "
              f"(--revalidate for a full pass)")
    for problem in problems:
        print(problem)
    invalid = len({problem.line for problem in problems})
    columns = records.columns  # counted from the columns: no Record is made for a million records
    kinds = dict(zip(GEOMETRY_KINDS, np.bincount(columns["kinds"], minlength=len(GEOMETRY_KINDS)).tolist(),
                     strict=True))
    clamped = int(columns["clamped"].sum())
    ignored = int(np.count_nonzero(columns["ignore"]))
    total = len(records) + invalid
    print(
        f"{os.path.abspath(path)}: {total} records, {len(records)} valid, {invalid} invalid; "
        f"objects in valid records: {', '.join(f'{n} {k}' for k, n in kinds.items())} ({ignored} of them ignore "
        f"regions; {len(all_ignored(records))} records of only ignore regions, not trained); "
        f"{clamped} coordinates clamped (within 1 px)"
    )
    return total, invalid


def _run_validate(args: argparse.Namespace) -> int:
    missing = [f for f in args.files if not os.path.isfile(f)]
    if missing:
        raise UsageError("; ".join(f"{path}: no such file" for path in missing))
    totals = [_validate_file(path, not args.no_image_check, args.revalidate) for path in args.files]
    invalid = sum(bad for _, bad in totals)
    if len(totals) > 1:
        records = sum(count for count, _ in totals)
        print(f"total: {records} records, {records - invalid} valid, {invalid} invalid")
    return EXIT_PROBLEMS if invalid else EXIT_OK


def _add_validate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check JSONL files against the grounding contract",
        description="Print every problem as 'file:line: field: message (value)', then a "
        "summary. Exit 0 if every record is valid, 1 if not, 2 if a file is missing.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE.jsonl", help="JSONL files in the grounding contract")
    images = parser.add_mutually_exclusive_group()
    images.add_argument(
        "--no_image_check",
        "--no-image-check",
        action="store_true",
        help="skip opening images (faster; sizes and decodability are not checked)",
    )
    images.add_argument("--decode", action="store_true",
                        help="decode every image fully, so a truncated or corrupt file is found (validate's default; "
                             "a run does it with `custom.decode_images: true`); the verdict remembers it")
    parser.add_argument("--revalidate", action="store_true",
                        help="validate every record again even where a stored verdict on the unchanged file exists")
    parser.set_defaults(handler=_run_validate)


# ---------------------------------------------------------------------------- convert


def _run_convert_coco(args: argparse.Namespace) -> int:
    from .convert_coco import convert_coco_file

    if not args.ann.is_file():
        raise UsageError(f"{args.ann}: no such file")
    if not args.images.is_dir():
        raise UsageError(f"{args.images}: no such directory")
    refuse_existing(args.out, args.overwrite, "converted records", {"--ann": args.ann})
    try:
        result = convert_coco_file(args.ann, args.images, args.out, overwrite=args.overwrite, polygons=args.polygons)
    except ValueError as exc:  # the annotation file is not COCO JSON
        raise UsageError(str(exc)) from None
    for problem in result.problems:
        print(problem)
    print(result.summary())
    return EXIT_PROBLEMS if result.skipped_anything else EXIT_OK


def _run_convert_icdar(args: argparse.Namespace) -> int:
    from .convert_icdar import convert_icdar_file, gt_files

    if not args.gt.exists() or not gt_files(args.gt):
        raise UsageError(f"{args.gt}: no ground-truth file (a .txt file, or a directory holding *.txt files)")
    if not args.images.is_dir():
        raise UsageError(f"{args.images}: no such directory")
    refuse_existing(args.out, args.overwrite, "converted records", {"--gt": args.gt})
    result = convert_icdar_file(args.gt, args.images, args.out, desc=args.desc, overwrite=args.overwrite)
    for problem in result.problems:
        print(problem)
    print(result.summary())
    return EXIT_PROBLEMS if result.skipped_anything else EXIT_OK


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
        description="COCO detection JSON -> JSONL: category names become desc (category_id and supercategory "
        "ride along), bbox becomes bbox_2d; masks stay boxes unless --polygons quad (a single 4-point polygon "
        "then becomes a quad) or --polygons polygon (a single polygon of 3 or more points becomes a polygon); "
        "iscrowd regions become ignore regions; image ids '2299' and 2299 match. "
        "Image sizes are checked against the files; a mismatched or missing image is skipped. The summary "
        "counts every change.",
    )
    coco.add_argument("--ann", type=Path, required=True, metavar="FILE.json", help="COCO annotation file")
    coco.add_argument("--images", type=Path, required=True, metavar="DIR", help="directory of the file_names")
    coco.add_argument("--out", type=Path, required=True, metavar="OUT.jsonl", help="JSONL to write")
    coco.add_argument("--polygons", choices=["bbox", "quad", "polygon"], default="bbox",
                      help="bbox (default): every object as its COCO bbox; quad: a single 4-point polygon mask as a "
                           "quad, other masks as their bbox; polygon: a single polygon mask (3 or more points) as a "
                           "polygon, other masks as their bbox")
    coco.add_argument("--overwrite", action="store_true", help="replace OUT.jsonl if it exists")
    coco.set_defaults(handler=_run_convert_coco)
    icdar = formats.add_parser(
        "icdar",
        help="ICDAR-2015-style text files (x1,y1,...,x4,y4,transcription)",
        description="One gt_<image>.txt per image, a quad and a transcription per line (a UTF-8 BOM and commas "
        "in the transcription are fine): each line becomes a quad in canonical order; '###' becomes an ignore "
        "region. A line that cannot be read is printed and skipped.",
    )
    icdar.add_argument("--gt", type=Path, required=True, metavar="DIR_or_FILE",
                       help="a ground-truth .txt file, or a directory of them")
    icdar.add_argument("--images", type=Path, required=True, metavar="DIR",
                       help="directory of the images (gt_img_1.txt -> img_1.jpg/.png/...)")
    icdar.add_argument("--out", type=Path, required=True, metavar="OUT.jsonl", help="JSONL to write")
    icdar.add_argument("--desc", default="text",
                       help="desc of a legible word; {text} is replaced by its transcription (default: text; "
                            "'text: {text}' keeps the transcription)")
    icdar.add_argument("--overwrite", action="store_true", help="replace OUT.jsonl if it exists")
    icdar.set_defaults(handler=_run_convert_icdar)


# ---------------------------------------------------------------------------- render / stats


def _run_render(args: argparse.Namespace) -> int:
    from src.training.resolve import resolve_run

    from .render import render, render_paths

    run = resolve_run(args.config, args.base_config)
    inputs = _config_inputs(args, run.cfg)
    records_out, image_dir = render_paths(args.out)
    refuse_existing(args.out, args.overwrite, "render", inputs)
    refuse_existing(records_out, args.overwrite, "render records", inputs)
    refuse_existing(image_dir, args.overwrite, "render images", inputs)
    result = render(run, args.out, split=args.split, limit=args.limit,
                    augment=args.augment, track=functools.partial(progress, desc="rendering", unit="sample"))
    print(f"rendered {result['samples']} sample(s) to {result['out']}")
    print(f"records (draw them: python -m src.vis --gt {result['records']} --out DIR): {result['records']}")
    print(f"their images: {result['images']}")
    if result["unhealthy"]:
        print(f"{result['unhealthy']} sample(s) failed the health checks: see `health_problems` in {result['out']}")
        return EXIT_PROBLEMS
    return EXIT_OK


def _add_render(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("render", help="write what the model sees for the first samples of a split",
                                   description="Encode samples with the config's template and write, per sample, "
                                               "the messages, decoded input and target, image tokens and geometry.")
    add_config_args(parser)
    parser.add_argument("--split", choices=["train", "val"], default="train", help="which split to render")
    parser.add_argument("--limit", type=int, default=20, help="render the first N samples (default: 20)")
    parser.add_argument("--augment", action="store_true", help="apply the config's augmentation (epoch 0 draw)")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.jsonl",
                        help="one JSON line per sample; records and images go beside it")
    add_overwrite_arg(parser)
    parser.set_defaults(handler=_run_render)


def _run_stats(args: argparse.Namespace) -> int:
    from src.training.resolve import resolve_run

    from .render import stats

    run = resolve_run(args.config, args.base_config)
    refuse_existing(args.out, args.overwrite, "stats", _config_inputs(args, run.cfg))
    result = stats(run, args.out, split=args.split, limit=args.limit,
                   track=functools.partial(progress, desc="encoding", unit="sample"))
    lengths = result["token_length"]
    print(f"records: {result['records']}, objects: {result['objects']}, ignore regions: {result['ignore_regions']}; "
          f"records left out, all objects ignored: {result['records_all_ignored']}")
    per_image = result["objects_per_image"]
    print(f"objects per image: p50 {per_image.get('p50')}, max {per_image.get('max')}; by kind: "
          + ", ".join(f"{n} {kind}" for kind, n in result["objects_by_kind"].items()))
    print(f"tokens per sample: p50 {lengths.get('p50')}, p90 {lengths.get('p90')}, max {lengths.get('max')}; "
          f"over max length ({result['max_length']}): {result['share_over_max_length']:.1%}")
    print(f"stats and histograms: {args.out}")
    return EXIT_OK


def _add_stats(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stats", help="records, objects per image, image sizes, token lengths")
    add_config_args(parser)
    parser.add_argument("--split", choices=["train", "val"], default="train", help="which split to measure")
    parser.add_argument("--limit", type=int, help="encode only the first N samples")
    parser.add_argument("--out", type=Path, default=Path("stats"), metavar="DIR", help="stats.json and PNGs")
    add_overwrite_arg(parser)
    parser.set_defaults(handler=_run_stats)


def _run_cache(args: argparse.Namespace) -> int:
    from src.training.resolve import resolve_run

    from .cache import build_cache

    run = resolve_run(args.config, args.base_config)
    refuse_existing(args.out, args.overwrite, "cache", _config_inputs(args, run.cfg))
    result = build_cache(run, args.out)
    print(f"cached {result['train_rows']} train and {result['val_rows']} val rows in {result['out']}")
    print(f"use it: custom: {{cached_dataset: {result['out']}}}")
    return EXIT_OK


def _add_cache(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="encode a config's data once (ms-swift cached dataset)")
    add_config_args(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the cache folder to write")
    add_overwrite_arg(parser)
    parser.set_defaults(handler=_run_cache)


def _run_rows(args: argparse.Namespace) -> int:
    from src.config.jsonl import files_to_read
    from src.training.resolve import resolve_run

    from .columns import RecordSubset, all_ignored
    from .loading import load_shards
    from .output_paths import refuse_images_inside
    from .swift_rows import upright_dir, write_swift_rows

    run = resolve_run(args.config, args.base_config, check_paths=False)
    cfg = run.cfg
    image_dir = upright_dir(args.out)
    refuse_existing(args.out, args.overwrite, "rows", {**_config_inputs(args, cfg), "--jsonl": args.jsonl})
    refuse_existing(image_dir, args.overwrite, "upright images of the rows")
    key, value = (("custom.train_jsonl", cfg.custom.train_jsonl) if args.split == "train"
                  else ("custom.val_jsonl", cfg.custom.val_jsonl))
    records = load_shards(files_to_read(args.jsonl, value, key), cfg.custom.bad_records)[1][: args.limit]
    # Earlier copies there are removed and new ones written: never where an input record's image lies.
    refuse_images_inside(records, image_dir, "the folder of the rows' upright images")
    ignored = all_ignored(records) if not args.no_answer else []
    if len(ignored):  # their reference answer would be [], denying what the ignore regions hold
        print(f"{len(ignored)} record(s) left out, all objects ignored: "
              + ", ".join(str(records[int(i)].source) for i in ignored[:20]) + (" ..." if len(ignored) > 20 else ""))
        records = RecordSubset(records, ignored)
    result = write_swift_rows(records, run.builder, args.out, with_answer=not args.no_answer)
    print(f"wrote {result['rows']} ms-swift row(s) for {result['records']} record(s) to {result['out']}")
    if result["upright_copies"]:
        print(f"{result['upright_copies']} image(s) with an EXIF turn or not RGB, written upright to "
              f"{result['images']} (ms-swift would read them unturned)")
    print(f"use them: swift infer --adapters CKPT --val_dataset {result['out']} --infer_backend transformers")
    return EXIT_OK


def _add_rows(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rows", help="write records as ms-swift rows (for `swift infer --val_dataset`)",
        description="Ask what training asks (the config's prompt and builder) about each record and write "
                    "ms-swift's row format: messages (system, user, and the reference answer unless "
                    "--no-answer) and absolute image paths.")
    add_config_args(parser)
    parser.add_argument("--split", choices=["train", "val"], default="val",
                        help="which of the config's splits (default: val)")
    parser.add_argument("--jsonl", type=Path, help="records to write instead of the config's split")
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--no_answer", "--no-answer", dest="no_answer", action="store_true",
                        help="leave out the reference answer")
    parser.add_argument("--out", type=Path, required=True, metavar="ROWS.jsonl", help="the rows to write")
    add_overwrite_arg(parser)
    parser.set_defaults(handler=_run_rows)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m src.datasets`` parser; add a subcommand with one ``_add_*`` call."""
    parser = make_parser("python -m src.datasets", __doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(subparsers)
    _add_validate(subparsers)
    _add_convert(subparsers)
    _add_render(subparsers)
    _add_stats(subparsers)
    _add_cache(subparsers)
    _add_rows(subparsers)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns its exit code or raises a user error."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """`run` with the project's exit codes (src/cli.py)."""
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
