"""Pictures: `python -m src.vis --gt GT.jsonl [--pred PRED.jsonl] --out vis_out/ [--limit N] [--overwrite]`.

One PNG per record with the ground truth and, given predictions, those too, coloured by how they match at
IoU 0.5 (green matched, red false positive, orange missed, blue matched GT; ignore regions grey and dashed,
predictions on them grey), and `index.html`, a contact sheet. GT and predictions are read as src.eval reads
them (JSONL or COCO files, recognised by content; predictions that pair with no image are refused). The
drawing is src/evaluation/pictures.py's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from src.cli import (
    EXIT_OK,
    UsageError,
    add_overwrite_arg,
    make_parser,
    positive_int,
    progress,
    refuse_existing,
    run_main,
)
from src.config.atomic import write_then_rename
from src.datasets.images import ImageError
from src.evaluation.inputs import InputError, load_ground_truth, load_predictions, pairing_failure
from src.evaluation.metrics import IOU_TYPES, PAIR_BY, pair_predictions, prediction_objects
from src.evaluation.pictures import MIN_SIDE, RecordView, png_name, render_record, write_index


def build_parser() -> argparse.ArgumentParser:
    """The command's parser (every flag with its help)."""
    parser = make_parser("python -m src.vis", __doc__)
    parser.add_argument("--gt", required=True, type=Path,
                        help="ground truth: a JSONL in the data contract, or a COCO annotation JSON")
    parser.add_argument("--pred", type=Path,
                        help="predictions (optional): the JSONL written by src.infer, or a COCO results JSON")
    parser.add_argument("--coco_gt", "--coco-gt", type=Path,
                        help="with a JSONL --gt and COCO results --pred: the COCO annotation file the JSONL was "
                             "converted from, whose image ids (by file name) the results name (as in src.eval)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNGs and index.html")
    parser.add_argument("--limit", type=positive_int, help="only the first N GT records")
    parser.add_argument("--min_side", "--min-side", type=int, default=MIN_SIDE,
                        help="scale small images up by a whole factor until the shorter side reaches this (the longer "
                             "side never past 4096)")
    parser.add_argument("--match_labels", "--match-labels", action="store_true",
                        help="a match also needs equal descriptions")
    parser.add_argument("--iou_type", "--iou-type", choices=IOU_TYPES, default="auto",
                        help="auto: box IoU for box pairs, polygon IoU when a quad is involved; bbox; polygon")
    parser.add_argument("--pair_by", "--pair-by", choices=PAIR_BY, default="path",
                        help="pair prediction lines with GT records by image path or by file name alone")
    add_overwrite_arg(parser)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Draw every record; raises UsageError for an unreadable input or an existing, non-empty out folder."""
    args = build_parser().parse_args(argv)
    refuse_existing(args.out, args.overwrite, "pictures",
                    {"--gt": args.gt, "--pred": args.pred, "--coco_gt": args.coco_gt}, output="folder")
    try:
        gt = load_ground_truth(args.gt, args.coco_gt)
        preds = load_predictions(args.pred, gt, args.pair_by) if args.pred else None
    except (FileNotFoundError, InputError) as exc:
        raise UsageError(str(exc)) from None
    failure = pairing_failure(preds, gt) if preds else None
    if failure:
        raise UsageError(failure)
    for message in gt.problems + (preds.bad if preds else []):
        print(f"warning: skipped: {message}", file=sys.stderr)
    records = gt.records[: args.limit]
    paired, _ = pair_predictions(preds.rows, records, preds.pair_by) if preds else ([None] * len(records), {})
    args.out.mkdir(parents=True, exist_ok=True)
    views = []
    for index, (record, row) in progress(enumerate(zip(records, paired, strict=True)), total=len(records),
                                         desc="drawing", unit="image"):
        source = str(record.source)
        parse_error = None
        if args.pred:
            parse_error = "no prediction line" if row is None else row.get("parse_error")
        name = png_name(index, record.image)
        try:
            img, n_gt, tp, on_ignore = render_record(record, row, args.pred is not None, min_side=args.min_side,
                                          match_labels=args.match_labels, iou_type=args.iou_type)
        except ImageError as exc:
            print(f"warning: {exc}", file=sys.stderr)
            views.append(RecordView("", source, sum(not o.ignore for o in record.objects), None, None, parse_error,
                                    exc.reason, sum(o.ignore for o in record.objects)))
            continue
        with write_then_rename(args.out / name, "wb") as fh:  # an earlier PNG is replaced only by a whole one
            img.save(fh, format="PNG")
        n_pred = len(prediction_objects(row)[0]) if args.pred else None
        views.append(RecordView(name, source, n_gt, n_pred, tp, parse_error,
                                n_ignore=len(record.objects) - n_gt, on_ignore=on_ignore))
    index = write_index(args.out, views, f"{args.gt.name}" + (f" vs {args.pred.name}" if args.pred else ""))
    print(f"wrote {sum(1 for v in views if not v.error)} images and {index}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`run` with the project's exit codes: 0 done, 2 bad input (nothing written), 3 a failure."""
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
