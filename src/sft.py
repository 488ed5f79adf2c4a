"""Training entry: `python -m src.sft --config CFG [--base_config BASE] [--device cpu] [--debug] [--dry-run]`.

parse -> set-up once per job (config, data, run directory: src/training/setup.py) -> ms-swift SwiftSft (or, for
a stage-3 config with `rlhf:`, SwiftRLHF's GRPO: src/training/grpo.py) -> report.
Runs as one process or as each process of a torchrun job (scripts/train.sh starts either).
Exit codes (src/cli.py): 0 done, 2 bad config or data (nothing started), 3 training failed (traceback),
130 Ctrl-C, 143 SIGTERM (each after saying where the run stopped); under torchrun the launcher's own code (1) for
a failure in any process.
"""

from __future__ import annotations

import argparse
import os
import sys

from src.cli import add_config_args, make_parser, run_main
from src.config.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED
from src.training.distributed import Job, JobFailed, job_from_env
from src.training.run_dir import stopped_report, write_fault
from src.training.run_lock import release_run_locks
from src.training.setup import prepare_run
from src.training.stop_signals import SigtermStops, Terminated


def build_parser() -> argparse.ArgumentParser:
    """The `python -m src.sft` parser (every flag with its help)."""
    parser = make_parser("python -m src.sft", __doc__)
    add_config_args(parser)
    parser.add_argument("--device", choices=["cpu", "auto"], default="auto",
                        help="cpu: merge the keys of configs/cpu.yaml on top of the config (float32, use_cpu, "
                             "no packing) and print what they change; auto: the config as it is")
    parser.add_argument("--debug", action="store_true", help="print the first built row and every argument")
    parser.add_argument("--revalidate", action="store_true",
                        help="validate every record again even where a stored verdict on the unchanged file exists")
    parser.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true",
                        help="validate config and data, print the arguments, start nothing")
    return parser


def _train(run, job: Job) -> None:
    if run.kwargs.get("use_cpu") and not run.kwargs.get("deepspeed"):
        from src.training.cpu_memory import keep_freed_memory

        # The LM head's large blocks are reused, not page-faulted anew each step. Not under DeepSpeed: its
        # ZeRO-3 (offload) run took 100 s instead of 22 s with the heap kept (see src/training/cpu_memory.py).
        keep_freed_memory()

    if run.cfg.reinforcement:  # stage 3: ms-swift's GRPO with the grounding rewards
        from src.training.grpo import run_grpo  # heavy: torch, transformers, ms-swift

        result = run_grpo(run.kwargs, run.cfg, run.plan, job)
    else:
        from src.training.pipeline import run_training  # heavy: torch, transformers, ms-swift

        result = run_training(run.kwargs, run.cfg, run.plan, run.augment_ops, job)
    if not job.is_main:
        return
    from src.training.curves import plot_loss_curves
    from src.training.generation_eval import best_checkpoint_report

    curves = plot_loss_curves(run.output_dir / "logging.jsonl", run.output_dir / "loss_curves.png")
    print(f"last checkpoint: {result.get('last_model_checkpoint')}")
    best = best_checkpoint_report(result, run.kwargs.get("metric_for_best_model"))
    if best:
        print(best)
    if curves:
        print(f"loss curves: {curves}")
    print(f"run directory: {run.output_dir}")


def main(argv: list[str] | None = None) -> int:
    """Run the training the arguments name; the exit code (module docstring). Ctrl-C and SIGTERM end it on
    every rank without a traceback, rank 0 saying where the run stopped and how to continue it."""
    args = build_parser().parse_args(argv)
    job = job_from_env()
    run = None

    def say_stopped(how: str) -> None:
        if job.is_main:
            where = stopped_report(run.output_dir) if run is not None else "before training started"
            print(f"\n{how}: {where}", file=sys.stderr, flush=True)

    with SigtermStops() as sigterm:
        try:
            run = prepare_run(args.config, args.base_config, on_cpu=args.device == "cpu", debug=args.debug,
                              dry_run=args.dry_run, job=job, revalidate=args.revalidate)
            if run is not None:
                _train(run, job)
        except JobFailed as failed:
            job.close()  # every rank is here: agree() ended with a barrier
            return failed.code
        except Terminated:
            sigterm.stopping()
            say_stopped("stopped by SIGTERM")
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            sigterm.stopping()
            say_stopped("interrupted (Ctrl-C)")
            # The exit code of an interrupt (cli.run_main's), said once: re-raised, every rank under torchrun printed
            # a KeyboardInterrupt traceback through `record` after the line above.
            return EXIT_INTERRUPTED
        except Exception as err:
            fault = write_fault(err, run.output_dir if run is not None else None)
            if fault is None:
                raise
            print(f"error: {fault}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        finally:
            release_run_locks()  # the process may go on (a command run in process): the directory is free again
    # Any other exception leaves without closing: the launcher stops the other ranks, which may be
    # waiting in a collective that this rank will never join.
    job.close()
    return 0


if __name__ == "__main__":
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: its summary shows a rank's traceback
        from torch.distributed.elastic.multiprocessing.errors import record

        sys.exit(record(main)())  # a rank's exception reaches torchrun's summary
    sys.exit(run_main(main))
