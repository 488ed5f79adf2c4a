"""The processes of one training job: who this process is, and how the job agrees before ms-swift starts.

torchrun (`torch.distributed.run`) starts one process per GPU (or per CPU slot) on each node and tells
each its place through environment variables. This module reads them (`job_from_env`, pure), joins
the process group once (`Job.connect`), and gives the few collectives the project's own set-up needs:
`agree` (did every rank succeed?) and `share` (rank 0's value to every rank). They run on a separate
gloo group, so they work with CPU objects whatever backend training uses (gloo on CPU, nccl on GPUs).

A process started without torchrun is a job of one: every collective is then a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Failure:
    """A step that failed on some rank: the exit code to leave with and the message to show once."""

    code: int
    message: str


class JobFailed(Exception):
    """A set-up step failed on at least one rank; every rank raises it with the same exit code.

    Rank 0 has already printed the messages of every failing rank when this is raised.
    """

    def __init__(self, code: int):
        super().__init__(f"job step failed (exit {code})")
        self.code = code


@dataclass(slots=True)
class Job:
    """This process's place in the job (from torchrun's variables) and, once connected, its control group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    host: str = field(default_factory=socket.gethostname)
    _group: Any = None  # the gloo group of the project's own collectives, once connected

    @property
    def is_main(self) -> bool:
        """True on global rank 0: the one process that writes the run's files and prints its reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when the job has more than one process."""
        return self.world_size > 1

    @property
    def nnodes(self) -> int:
        """Number of nodes, assuming the same number of processes on each (as torchrun starts them)."""
        return max(1, self.world_size // max(1, self.local_world_size))

    def describe(self) -> str:
        """`rank R/N on HOST (node K)`, for messages."""
        return f"rank {self.rank}/{self.world_size} on {self.host} (node {self.node_rank})"

    def connect(self, *, backend: str, timeout_s: int, deepspeed: bool) -> None:
        """Join the job's process group (once), and DeepSpeed's communication layer when it is used.

        The default group uses `backend` (what training uses: gloo on CPU, nccl on GPUs). ms-swift,
        transformers and accelerate find it initialised and use it as it is. DeepSpeed's layer is set up
        here too because under ZeRO-3 the model is built inside `deepspeed.zero.Init` before the trainer
        would set it up, and on CPU transformers never does (its `use_cpu` branch skips DeepSpeed), so
        ZeRO-3 would otherwise see a world of one. No-op for a job of one process.
        """
        if not self.distributed or self._group is not None:
            return
        import torch.distributed as dist
        from swift.utils import init_process_group  # sets the device, then joins with env://

        init_process_group(backend=backend, timeout=timeout_s)
        self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s)) \
            if dist.get_backend() != "gloo" else dist.group.WORLD
        if deepspeed:
            import deepspeed as ds

            ds.init_distributed(dist_backend=backend, timeout=timedelta(seconds=timeout_s))

    def agree(self, failure: Failure | None) -> None:
        """Every rank reports how its step went; if any failed, rank 0 prints each failure once and every
        rank raises JobFailed with the first failing rank's exit code.

        Rank 0 prints before any rank leaves (a last barrier), so the message is not lost when the
        launcher stops the other processes.
        """
        if not self.distributed:
            if failure is not None:
                _print_failures([(self, failure)])
                raise JobFailed(failure.code)
            return
        import torch.distributed as dist

        reports: list[Any] = [None] * self.world_size
        dist.all_gather_object(reports, (self.rank, self.host, self.node_rank, failure), group=self._group)
        failed = [(Job(rank=r, world_size=self.world_size, host=h, node_rank=n), f)
                  for r, h, n, f in reports if f is not None]
        if not failed:
            return
        if self.is_main:
            _print_failures(failed)
        dist.barrier(group=self._group)
        raise JobFailed(failed[0][1].code)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self._group)
        return values

    def share(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank (pickled through the control group)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def close(self) -> None:
        """Leave the process group together: a barrier, then destroy it (call it on every rank).

        Without the barrier a rank that finishes first tears its connections down while another is
        still destroying its group, and gloo can abort that one ("terminate called without an active
        exception", seen with ZeRO-3 offload on CPU).
        """
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier(group=self._group)
                dist.destroy_process_group()
            self._group = None


def job_from_env(environ: Mapping[str, str] | None = None) -> Job:
    """This process's place in the job from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, GROUP_RANK); a job of one when they are absent."""
    env = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        value = env.get(name, "")
        return int(value) if value.strip().lstrip("-").isdigit() else default

    world_size = number("WORLD_SIZE", 1)
    return Job(rank=number("RANK", 0), world_size=world_size, local_rank=number("LOCAL_RANK", 0),
               local_world_size=number("LOCAL_WORLD_SIZE", world_size),
               node_rank=number("GROUP_RANK", number("NODE_RANK", 0)))


def training_backend(swift_kwargs: Mapping[str, Any], cuda_available: bool) -> str:
    """The process-group backend training uses: `training.ddp_backend` if set, else nccl on GPUs and gloo
    on CPU (`use_cpu`, or no GPU visible)."""
    if swift_kwargs.get("ddp_backend"):
        return str(swift_kwargs["ddp_backend"])
    return "nccl" if cuda_available and not swift_kwargs.get("use_cpu") else "gloo"


def _print_failures(failed: list[tuple[Job, Failure]]) -> None:
    import sys

    by_message: dict[str, list[Job]] = {}
    for job, failure in failed:
        by_message.setdefault(failure.message, []).append(job)
    for message, jobs in by_message.items():
        if jobs[0].world_size > 1:
            where = ", ".join(j.describe() for j in jobs)
            total = jobs[0].world_size
            scope = f"on every rank ({total})" if len(jobs) == total else f"on {where}"
            print(f"error {scope}: {message}", file=sys.stderr, flush=True)
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)
