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
import gc
import os
import signal
import sys
import threading

from src.cli import add_config_args, make_parser, run_main
from src.config.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED
from src.training.distributed import Job, JobFailed, job_from_env
from src.training.run_dir import stopped_report, write_fault
from src.training.run_lock import release_run_locks
from src.training.setup import prepare_run


class Terminated(BaseException):
    """SIGTERM reached this process (a scheduler's stop, `timeout`, `kill`, or torchrun passing on its own).

    A BaseException like KeyboardInterrupt, so that no `except Exception` on the way takes it for a failure."""


class _SigtermStops:
    """While entered, SIGTERM raises `Terminated` in this process's main thread, wherever it is, as Ctrl-C raises
    KeyboardInterrupt; on exit the handler found on entry is back (main may run in process, in a test).

    Python's default for SIGTERM ends the process at once: no word of the last checkpoint, and no `finally`
    (the run lock's file kept the dead holder's details)."""

    def __init__(self) -> None:
        self._received = False
        self._stopping = False
        self._pid = os.getpid()
        self._previous = None
        self._previous_sigchld = None

    def __enter__(self) -> _SigtermStops:
        # Only the main thread may set a handler; elsewhere (main called from a thread) SIGTERM keeps its own.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous_sigchld is not None:
            gc.collect()  # a DataLoader iterator left in a cycle shuts its workers down now, while SIGCHLD is quiet
            signal.signal(signal.SIGCHLD, self._previous_sigchld)
            self._previous_sigchld = None
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def stopping(self) -> None:
        """The stop is being reported: a second SIGTERM (a scheduler signals every process of the job, and
        torchrun each rank again) must not cut the report or the release of the run lock."""
        self._stopping = True

    def _on_sigterm(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            # A child forked from here inherited the handler (a datasets.map or validation worker; DataLoader
            # workers set their own): it ends by the signal, as it did before, and its parent reports.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if not self._received:
            self._received = True
            # A scheduler signals the DataLoader workers too; torch's SIGCHLD handler then raised 'DataLoader worker
            # (pid N) is killed by signal: Terminated' wherever the stop had got to (the iterator's __del__ too).
            self._previous_sigchld = signal.signal(signal.SIGCHLD, _child_ended)
        if not self._stopping:
            raise Terminated


def _child_ended(signum, frame) -> None:
    """SIGCHLD while stopping on SIGTERM: a child that ends then ends with the job, not as a failure of it."""


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

    with _SigtermStops() as sigterm:
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
