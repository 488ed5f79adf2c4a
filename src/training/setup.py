"""Everything a training job does before ms-swift starts, done once per job however many processes it has.

Every rank loads the config and the data (it trains on them); rank 0 alone decides how the run starts
(resume / warm start), checks and prepares the run directory, writes the project's files there
(`resolved_config.yaml`, `skipped_records.jsonl`, the warm-start merge `init_merged/`) and prints the
reports. After each step the ranks agree (src/training/distributed.py): a failure on any rank is printed once and
ends every rank with the same exit code, before anything trains.

Several nodes: the run directory (`training.output_dir`), the data and the model must be at the same
paths on every node, on a file system they share. Each rank checks that it sees the
`resolved_config.yaml` rank 0 wrote; a node that does not is an error naming it, not a hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import EXIT_CONFIG_ERROR, ProjectConfig
from src.config.errors import EXIT_FAILED, UserError
from src.config.excerpt import excerpt
from src.config.report import format_overrides, format_resolved, resolved_yaml
from src.config.swift_fields import swift_defaults
from src.datasets.augment import AugmentOp
from src.datasets.columns import image_folders
from src.datasets.loading import write_skipped
from src.datasets.plan import DataPlan, plan_data
from src.datasets.verdicts import CACHE_ENV, VerdictStore
from src.training.distributed import Failure, Job
from src.training.resolve import ResolvedRun, resolve_run, with_start
from src.training.run_dir import (
    free_name,
    guard_output_dir,
    resolve_resume,
    resumes_in,
    set_aside_earlier_run,
    set_aside_logging_dir,
    skipped_notes,
    write_fault,
)
from src.training.run_lock import stale_note, take_run_lock
from src.training.swift_plugin import write_plugin
from src.training.warm_start import StartPlan, merge_adapter, plan_start

RESOLVED_CONFIG = "resolved_config.yaml"


@dataclass(slots=True)
class PreparedRun:
    """A job ready to train: the run as resolved once, ms-swift's arguments (start decided), the data, how it
    starts."""

    resolved: ResolvedRun
    kwargs: dict[str, Any]
    plan: DataPlan
    start: StartPlan

    @property
    def cfg(self) -> ProjectConfig:
        """The validated config."""
        return self.resolved.cfg

    @property
    def augment_ops(self) -> list[AugmentOp]:
        """`custom.augment`, parsed once by `resolve_run`."""
        return self.resolved.augment_ops

    @property
    def output_dir(self) -> Path:
        """The run directory."""
        return Path(self.kwargs["output_dir"])


@dataclass(frozen=True, slots=True)
class RunDecision:
    """What rank 0 decided and every rank follows: the model, the checkpoint to resume, the config's digest."""

    model: str | None
    resume_from_checkpoint: str | None
    resolved_sha1: str | None  # None for a dry run (nothing written)


def _failure(err: BaseException) -> Failure:
    """Exit 2 with the message for the errors a user fixes in config or data; 3 with the traceback otherwise."""
    if isinstance(err, UserError):
        return Failure(EXIT_CONFIG_ERROR, str(err))
    fault = write_fault(err, None)  # a full disk or read-only folder: one message, not a traceback
    if fault:
        return Failure(EXIT_FAILED, fault)
    return Failure(EXIT_FAILED, "".join(traceback.format_exception(err)).rstrip())


def _attempt(fn):
    """(fn(), None), or (None, Failure) when it raised."""
    try:
        return fn(), None
    except Exception as err:  # noqa: BLE001 - every failure is reported to the whole job, then re-raised as exit
        return None, _failure(err)


def _connect(job: Job, cfg: ProjectConfig | None, kwargs: dict[str, Any] | None) -> None:
    import torch

    from src.training.distributed import training_backend

    timeout = int((kwargs or {}).get("ddp_timeout") or swift_defaults().get("ddp_timeout") or 1800)
    backend = training_backend(kwargs, torch.cuda.is_available()) if kwargs else "gloo"
    job.connect(backend=backend, timeout_s=timeout, deepspeed=bool(cfg and cfg.deepspeed.enabled))


def _print_plan(cfg: ProjectConfig, kwargs: dict, plan: DataPlan, start: StartPlan, debug: bool) -> None:
    print("== resolved config (value  # where it was set)")
    print(format_resolved(cfg.merged))
    if cfg.merged.overrides:
        print("== CPU overrides (gpus=cpu / --device cpu): what configs/cpu.yaml (and configs/cpu_grpo.yaml for "
              "GRPO) changed, and why")
        print(format_overrides(cfg.merged.overrides))
    print("== ms-swift SftArguments")
    for key in sorted(kwargs):
        print(f"{key} = {excerpt(kwargs[key], 160)}")  # a long value cut, its length shown
    print("== data")
    print(plan.summary())
    if debug and plan.train_samples:
        print("== first training row")
        print(json.dumps(plan.first_row(), indent=2, ensure_ascii=False))
    for message in start.messages:
        print(f"note: {message}")


def _prepare_run_dir(run: ResolvedRun, plan: DataPlan, *, debug: bool,
                     dry_run: bool) -> tuple[RunDecision, StartPlan]:
    """Rank 0's part: decide the start, print the plan, and (unless a dry run) guard and fill the run dir."""
    cfg, kwargs = run.cfg, run.swift_args
    output_dir = Path(kwargs["output_dir"])
    resume = resolve_resume(output_dir, kwargs.get("resume_from_checkpoint"))
    start = plan_start(with_start(kwargs, model=kwargs.get("model"), resume_from_checkpoint=resume), cfg.run.init_from,
                       output_dir, swift_defaults(),
                       continuing=kwargs.get("resume_from_checkpoint") == "auto" and resume is not None)
    _print_plan(cfg, with_start(kwargs, model=start.model, resume_from_checkpoint=start.resume_from_checkpoint),
                plan, start, debug)
    auto = kwargs.get("resume_from_checkpoint") == "auto"
    for note in skipped_notes(output_dir, resume) if auto else ():
        print(f"note: {note}")
    if dry_run:
        print("dry run: config and data are valid; nothing started", flush=True)
        return RunDecision(start.model, start.resume_from_checkpoint, None), start
    lock = take_run_lock(output_dir)  # held until the process ends: one run per directory
    here = resumes_in(output_dir, start.resume_from_checkpoint)
    logging_dir = Path(kwargs["logging_dir"]) if kwargs.get("logging_dir") else None
    restart = guard_output_dir(output_dir, overwrite=cfg.run.overwrite, resuming=here, auto=auto,
                               logging_dir=logging_dir)
    for note in (stale_note(lock), restart):
        if note:
            print(f"note: {note}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    if not here:
        # Before this run writes: ms-swift appends to logging.jsonl and TensorBoard's folder, and the export
        # that merges a warm start refuses an existing init_merged.
        notes = (set_aside_earlier_run(output_dir, logging_dir, _run_inputs(kwargs, cfg, start), stamp,
                                       holds_inputs=_holds_images(plan))
                 if cfg.run.overwrite or restart else set_aside_logging_dir(output_dir, logging_dir, stamp))
        for note in notes:
            print(f"note: {note}")
    resolved = _save_resolved_config(cfg, output_dir, stamp, resuming=here)
    print(f"resolved config saved: {resolved}")
    write_plugin(output_dir, run.image_settings)  # the image budget, for `swift infer` on a checkpoint
    skipped = write_skipped(plan.splits, output_dir / "skipped_records.jsonl")
    if skipped:
        print(f"skipped records listed in: {skipped}")
    if start.merge_adapter:
        merge_adapter(start.merge_adapter, Path(start.model))
    sys.stdout.flush()  # before the other ranks go on: the reports come first in a shared log
    return RunDecision(start.model, start.resume_from_checkpoint, _sha1(resolved)), start


def _save_resolved_config(cfg: ProjectConfig, output_dir: Path, stamp: str, *, resuming: bool) -> Path:
    """Write the run's resolved config into `output_dir`. A resume whose config differs from the one the run
    started with keeps that one beside it as `resolved_config.<stamp>.yaml` (the config of the steps already
    trained; a checkpoint's args.json holds ms-swift's arguments only) and says so."""
    path = output_dir / RESOLVED_CONFIG
    text = resolved_yaml(cfg.merged)
    if resuming and path.is_file() and path.read_text(encoding="utf-8") != text:
        earlier = free_name(output_dir, f"resolved_config.{stamp}", ".yaml")
        path.rename(earlier)
        print(f"note: resume: the config differs from the one this run started with; that one is kept as {earlier}")
    path.write_text(text, encoding="utf-8")
    return path


def _holds_images(plan: DataPlan) -> Callable[[Path], bool]:
    """Whether a folder is or holds a folder of the plan's records' images (worked out on the first call)."""
    folders: list[Path] = []

    def holds(entry: Path) -> bool:
        if not folders:
            found = set().union(*(image_folders(split.records) for split in plan.splits))
            folders.extend(Path(os.path.realpath(f)) for f in found)
        entry = Path(os.path.realpath(entry))
        return any(folder == entry or entry in folder.parents for folder in folders)

    return holds


def _run_inputs(kwargs: dict[str, Any], cfg: ProjectConfig, start: StartPlan) -> list[Path]:
    """What the run reads that could sit inside its own output_dir: the model, the warm start, the data files
    and their folders (where their images usually are), a pre-encoded cache. Not the merged warm start
    (`init_merged`) when this run merges it: that it writes."""
    data = [Path(p) for key in ("dataset", "val_dataset", "cached_dataset", "cached_val_dataset")
            for p in kwargs.get(key) or []]
    model = None if start.merge_adapter else start.model
    found = [p for p in (kwargs.get("model"), model, cfg.run.init_from, start.resume_from_checkpoint) if p]
    return [Path(p) for p in found] + data + [p.parent for p in data]


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _visibility_failure(output_dir: Path, expected_sha1: str, job: Job) -> Failure | None:
    """None when this rank sees the resolved config rank 0 wrote into `output_dir`; else the failure."""
    resolved = output_dir / RESOLVED_CONFIG
    if resolved.is_file() and _sha1(resolved) == expected_sha1:
        return None
    seen = "does not exist" if not resolved.exists() else "holds another run's config"
    return Failure(EXIT_CONFIG_ERROR,
                   f"{job.describe()} cannot see the run directory rank 0 prepared: {resolved} {seen} there. "
                   f"A job across nodes needs `training.output_dir`, the data and the model at the same paths "
                   f"on a file system every node shares (NFS, Lustre, ...).")


def _plan_data_once(run: ResolvedRun, job: Job, revalidate: bool) -> DataPlan:
    """The data plan on every rank, validated once: rank 0 validates and stores the verdict, then the
    other ranks plan from the store (a node that does not share the store validates on its own)."""
    store = VerdictStore()
    plan = None
    for rank_0_turn in (True, False) if job.distributed else (True,):
        failure = None
        if rank_0_turn == job.is_main:
            plan, failure = _attempt(lambda: plan_data(run.cfg, preprocessor=run.preprocessor, store=store,
                                                       revalidate=revalidate and job.is_main))
        job.agree(failure)
    if job.distributed:
        reused = job.gather(all(split.from_store for split in plan.splits))
        alone = [rank for rank, hit in enumerate(reused) if rank and not hit]
        if job.is_main:
            print("validation: once, by rank 0; " + (f"ranks {alone} validated again (no shared verdict store: "
                  f"set {CACHE_ENV} to a shared folder)" if alone else "every other rank read its verdict"),
                  flush=True)
    return plan


def prepare_run(config: Path, base_config: Path | None, *, on_cpu: bool, debug: bool, dry_run: bool,
                job: Job, revalidate: bool = False) -> PreparedRun | None:
    """Load, check and set up a run once for the whole job; None after a dry run.

    Raises JobFailed (on every rank, after rank 0 printed the failures) when any step fails anywhere.
    """
    # Every rule, once, in one step (src/training/resolve.py): config, data-layer and stage-3 checks together.
    run, failure = _attempt(lambda: resolve_run(config, base_config, on_cpu=on_cpu, world_size=job.world_size))
    if job.distributed:
        _connect(job, run.cfg if run else None, run.swift_args if run else None)
    job.agree(failure)
    assert run is not None and run.swift_args is not None  # agree() raised otherwise

    plan = _plan_data_once(run, job, revalidate)
    # What the model sees reaches `swift infer` / `swift export` from the checkpoint's args.json alone:
    # resolve_run put the image budget's plugin and the system prompt into ms-swift's arguments.
    kwargs = run.swift_args
    if kwargs.get("logging_dir"):
        # ms-swift hands logging_dir to TensorBoard through TENSORBOARD_LOGGING_DIR, with setdefault: a value
        # already in the environment (the shell's, or an earlier run's in this process) would take this run's
        # curves elsewhere. The config's (or the project's default) decides.
        os.environ["TENSORBOARD_LOGGING_DIR"] = kwargs["logging_dir"]

    decision, failure, start = None, None, None
    if job.is_main:
        result, failure = _attempt(lambda: _prepare_run_dir(run, plan, debug=debug, dry_run=dry_run))
        if result is not None:
            decision, start = result
    job.agree(failure)
    decision = job.share(decision)
    if start is None:  # not rank 0: follow its decision
        start = StartPlan(model=decision.model, resume_from_checkpoint=decision.resume_from_checkpoint)
    if decision.resolved_sha1 is None:
        return None
    kwargs = with_start(kwargs, model=decision.model, resume_from_checkpoint=decision.resume_from_checkpoint)
    if job.distributed:
        job.agree(_visibility_failure(Path(kwargs["output_dir"]), decision.resolved_sha1, job))
    return PreparedRun(resolved=run, kwargs=kwargs, plan=plan, start=start)
