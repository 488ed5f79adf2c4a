"""Evaluation: `python -m src.eval --pred PRED --gt GT [--out metrics.json] [--iou_type auto]`.

GT is a JSONL in the data contract or a COCO annotation file (`instances.json`); PRED is the prediction JSONL
of src.infer or a COCO results file (`[{image_id, category_id, bbox, score}, ...]`); each is recognised by its
content. COCO results against a JSONL GT converted from COCO need `--coco_gt instances.json` for the ids they
name (else the numbers ending the file names stand in). Prints the metrics table (AP, AP50, AP75, P/R/F1 at
IoU 0.5, class-agnostic, over descriptions and per description, parse failures) and writes every number as
JSON (default: PRED with suffix .metrics.json; an existing file is refused unless --overwrite). Inputs that do
not pair (no prediction for any GT image, most lines unreadable, COCO results naming image ids a JSONL GT
without --coco_gt lacks) are refused with exit 2 and what did not match. The metrics are
src/evaluation/metrics.py's; the inputs src/evaluation/inputs.py's.
"""

from __future__ import annotations

import argparse
import functools
import json
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
from src.config.atomic import write_text_then_rename
from src.evaluation.inputs import InputError, load_ground_truth, load_predictions, pairing_failure
from src.evaluation.metrics import IOU_TYPES, MAX_DETS, PAIR_BY, evaluate, format_table

_SHOWN = 5


def build_parser() -> argparse.ArgumentParser:
    """The command's parser (every flag with its help)."""
    parser = make_parser("python -m src.eval", __doc__)
    parser.add_argument("--pred", required=True, type=Path,
                        help="predictions: the JSONL written by src.infer, or a COCO results JSON")
    parser.add_argument("--gt", required=True, type=Path,
                        help="ground truth: a JSONL in the data contract, or a COCO annotation JSON")
    parser.add_argument("--coco_gt", "--coco-gt", type=Path,
                        help="with a JSONL --gt: the COCO annotation file it was converted from, whose image ids (by "
                             "file name) and category ids (by name) COCO results --pred name (as src.infer "
                             "--coco_gt writes them); without it a JSONL's image ids are the numbers ending its file "
                             "names, and results naming other ids are refused")
    parser.add_argument("--out", type=Path,
                        help="metrics JSON (default: PRED with suffix .metrics.json)")
    parser.add_argument("--iou_type", "--iou-type", choices=IOU_TYPES, default="auto",
                        help="auto: box IoU for box pairs, polygon IoU when a quad is involved; bbox; polygon")
    parser.add_argument("--max_dets", "--max-dets", type=positive_int, default=MAX_DETS,
                        help="detections per image that AP considers (COCO: 100)")
    parser.add_argument("--pair_by", "--pair-by", choices=PAIR_BY, default="path",
                        help="pair prediction lines with GT records by image path (relative paths read against "
                             "each file's folder) or by file name alone (a COCO GT always pairs by id or name)")
    add_overwrite_arg(parser)
    return parser


def _warn(kind: str, messages: Sequence[str]) -> None:
    for message in messages[:_SHOWN]:
        print(f"warning: {kind}: {message}", file=sys.stderr)
    if len(messages) > _SHOWN:
        print(f"warning: ... {len(messages) - _SHOWN} more ({kind}), all listed in the metrics JSON", file=sys.stderr)


def run(argv: Sequence[str] | None = None) -> int:
    """Evaluate; raises UsageError when an input cannot be read or paired, the GT holds no record or the output
    exists."""
    args = build_parser().parse_args(argv)
    out = args.out or args.pred.with_suffix(".metrics.json")
    refuse_existing(out, args.overwrite, "metrics", {"--gt": args.gt, "--pred": args.pred, "--coco_gt": args.coco_gt},
                    output="file")
    try:
        gt = load_ground_truth(args.gt, args.coco_gt)
        preds = load_predictions(args.pred, gt, args.pair_by)
    except (FileNotFoundError, InputError) as exc:
        raise UsageError(str(exc)) from None
    _warn("GT skipped", gt.problems)
    _warn("prediction skipped", preds.bad)
    for note in gt.notes + preds.notes:
        print(f"note: {note}", file=sys.stderr)
    failure = pairing_failure(preds, gt)
    if failure:
        raise UsageError(failure)
    if preds.unknown_images:
        _warn("results for images not in the GT, not used", preds.unknown_images)
    metrics = evaluate(preds.rows, gt.records, iou_type=args.iou_type, max_dets=args.max_dets,
                       track=functools.partial(progress, total=len(gt.records), desc="matching", unit="record"),
                       image_ids=gt.image_ids, pair_by=preds.pair_by)
    metrics["inputs"] = {"pred": str(args.pred.resolve()), "gt": str(args.gt.resolve()),
                         "coco_gt": str(args.coco_gt.resolve()) if args.coco_gt else None,
                         "gt_image_ids": gt.id_rule, "pred_format": preds.format,
                         "gt_format": gt.format, "pair_by": preds.pair_by, "gt_problems": gt.problems,
                         "bad_pred_lines": preds.bad, "notes": gt.notes + preds.notes,
                         "results_for_unknown_images": preds.unknown_images,
                         "results_with_unknown_category_ids": dict(preds.unknown_categories)}
    print(format_table(metrics))
    write_text_then_rename(out, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")  # whole or not at all
    print(f"\nmetrics: {out}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`run` with the project's exit codes: 0 done, 2 bad input (nothing written), 3 a failure."""
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
