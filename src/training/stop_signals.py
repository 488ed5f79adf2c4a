"""SIGTERM turned into an exception while a training runs, as Ctrl-C is one (`KeyboardInterrupt`).

A scheduler's stop (SLURM, Kubernetes), `timeout`, `kill`, or torchrun passing its own SIGTERM on to each rank
end a process by Python's default at once: no word of where the run stopped and no `finally` (the run lock kept a
dead holder). `src.sft` runs inside `SigtermStops` and reports `Terminated` like an interrupt.
"""

from __future__ import annotations

import gc
import os
import signal
import threading


class Terminated(BaseException):
    """SIGTERM reached this process (a scheduler's stop, `timeout`, `kill`, or torchrun passing on its own).

    A BaseException like KeyboardInterrupt, so that no `except Exception` on the way takes it for a failure."""


class SigtermStops:
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

    def __enter__(self) -> SigtermStops:
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
