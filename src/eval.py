"""Evaluation: `python -m src.eval --pred PRED.jsonl --gt GT.jsonl [--out metrics.json] [--iou_type auto]`.

Prints the metrics table (AP, AP50, AP75, P/R/F1 at IoU 0.5, class-agnostic, over descriptions and per
description, parse failures) and writes every number as JSON (default: PRED with suffix .metrics.json;
an existing file is refused unless --overwrite). The metrics are src/evaluation/metrics.py's.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from src.cli import EXIT_OK, UsageError, add_overwrite_arg, make_parser, progress, refuse_existing, run_main
from src.datasets.validation import load_records
from src.evaluation.metrics import IOU_TYPES, MAX_DETS, evaluate, format_table
from src.inference.predictions import read_prediction_rows


def build_parser() -> argparse.ArgumentParser:
    """The command's parser (every flag with its help)."""
    parser = make_parser("python -m src.eval", __doc__)
    parser.add_argument("--pred", required=True, type=Path,
                        help="predictions JSONL written by src.infer")
    parser.add_argument("--gt", required=True, type=Path,
                        help="ground-truth JSONL in the data contract")
    parser.add_argument("--out", type=Path,
                        help="metrics JSON (default: PRED with suffix .metrics.json)")
    parser.add_argument("--iou_type", "--iou-type", choices=IOU_TYPES, default="auto",
                        help="auto: box IoU for box pairs, polygon IoU when a quad is involved; bbox; polygon")
    parser.add_argument("--max_dets", "--max-dets", type=int, default=MAX_DETS,
                        help="detections per image that AP considers (COCO: 100)")
    add_overwrite_arg(parser)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Evaluate; raises UsageError when an input cannot be read, the GT holds no record or the output exists."""
    args = build_parser().parse_args(argv)
    out = args.out or args.pred.with_suffix(".metrics.json")
    refuse_existing(out, args.overwrite, "metrics")
    try:
        # Images are not decoded: evaluation needs only the paths, and decoding a val set is slow.
        records, problems = load_records(args.gt, check_image=False)
        rows, bad_lines = read_prediction_rows(args.pred)
    except (FileNotFoundError, UnicodeDecodeError) as exc:
        raise UsageError(str(exc)) from None
    for problem in problems[:5]:
        print(f"warning: GT record skipped: {problem}", file=sys.stderr)
    if len(problems) > 5:
        print(f"warning: ... {len(problems) - 5} more GT problems", file=sys.stderr)
    for message in bad_lines:
        print(f"warning: prediction line skipped: {message}", file=sys.stderr)
    if not records:
        raise UsageError(f"no valid records in {args.gt}")
    metrics = evaluate(rows, records, iou_type=args.iou_type, max_dets=args.max_dets,
                       track=functools.partial(progress, total=len(records), desc="matching", unit="record"))
    metrics["inputs"] = {"pred": str(args.pred.resolve()), "gt": str(args.gt.resolve()),
                         "gt_problems": [str(p) for p in problems], "bad_pred_lines": bad_lines}
    print(format_table(metrics))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nmetrics: {out}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`run` with the project's exit codes: 0 done, 2 bad input (nothing written), 3 a failure."""
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
