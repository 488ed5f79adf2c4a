"""Training entry: `python -m src.sft --config CFG [--base_config BASE] [--debug] [--dry-run]`.

parse -> offline env -> config -> data -> (dry run: print and stop) -> ms-swift SwiftSft.
Exit codes: 0 done, 2 bad config or data (nothing started), other: training failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from src.config import EXIT_CONFIG_ERROR, ConfigError, to_sft_kwargs
from src.config.report import dump_resolved_yaml, format_resolved
from src.config.swift_fields import swift_defaults
from src.data_plan import DataPlan, plan_data
from src.datasets.loading import DataError, write_skipped
from src.health import HealthCheckError
from src.offline import load_config_for_run
from src.run_dir import guard_output_dir, resolve_resume
from src.warm_start import merge_adapter, plan_start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.sft", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="the run's YAML")
    parser.add_argument("--base_config", type=Path, help="a YAML merged under the whole extends chain")
    parser.add_argument("--debug", action="store_true", help="print the first built row and every argument")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="validate config and data, print the arguments, start nothing")
    return parser.parse_args(argv)


def _print_plan(cfg, kwargs: dict, plan: DataPlan, debug: bool) -> None:
    print("== resolved config (value  # where it was set)")
    print(format_resolved(cfg.merged))
    print("== ms-swift SftArguments")
    for key in sorted(kwargs):
        print(f"{key} = {kwargs[key]!r}")
    print("== data")
    print(plan.summary())
    if debug and plan.train_rows:
        print("== first training row")
        print(json.dumps(plan.train_rows[0], indent=2, ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config_for_run(args.config, args.base_config)
        kwargs = to_sft_kwargs(cfg)
        plan = plan_data(cfg)
        output_dir = Path(kwargs["output_dir"])
        kwargs["resume_from_checkpoint"] = resolve_resume(output_dir, kwargs.get("resume_from_checkpoint"))
        start = plan_start(kwargs, cfg.run.init_from, output_dir, swift_defaults())
        kwargs["model"], kwargs["resume_from_checkpoint"] = start.model, start.resume_from_checkpoint
        _print_plan(cfg, kwargs, plan, args.debug)
        for message in start.messages:
            print(f"note: {message}")
        if args.dry_run:
            print("dry run: config and data are valid; nothing started")
            return 0
        guard_output_dir(output_dir, overwrite=cfg.run.overwrite, resuming=bool(kwargs["resume_from_checkpoint"]))
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"resolved config saved: {dump_resolved_yaml(cfg.merged, output_dir / 'resolved_config.yaml')}")
    skipped = write_skipped(plan.splits, output_dir / "skipped_records.jsonl")
    if skipped:
        print(f"skipped records listed in: {skipped}")

    from src.datasets.augment import parse_augment_ops
    from src.pipeline import run_training  # heavy: torch, transformers, ms-swift

    if start.merge_adapter:
        merge_adapter(start.merge_adapter, Path(start.model))
    try:
        result = run_training(kwargs, cfg, plan, parse_augment_ops(cfg.custom.augment))
    except HealthCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    from src.curves import plot_loss_curves

    curves = plot_loss_curves(output_dir / "logging.jsonl", output_dir / "loss_curves.png")
    print(f"last checkpoint: {result.get('last_model_checkpoint')}")
    if curves:
        print(f"loss curves: {curves}")
    print(f"run directory: {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
