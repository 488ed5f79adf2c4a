"""One run per run directory: an OS-level lock on `<output_dir>/.run.lock`, held for the run's lifetime.

The lock is `fcntl.flock` on the file, taken by rank 0 of a job (the other ranks run under it) and released
when the process ends, however it ends (the kernel drops it with the last file descriptor, SIGKILL
included). The file holds who took it (pid, host, start time) so a second run is refused naming the
holder. A file left behind by a process that has died is not a lock: its lock can be taken, so it is
stale, and the run that finds it says so and takes it over (a run that ends normally empties the file).

Across nodes (torchrun with several hosts) the lock means something only on a file system that passes
flock between hosts (NFS v4, Lustre, GPFS with it enabled); the run directory must be shared anyway
(src/training/setup.py).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from src.config import ConfigError

LOCK_NAME = ".run.lock"


@dataclass(slots=True)
class RunLock:
    """A held lock on a run directory; `release()` (or the end of the process) frees it."""

    path: Path
    fd: int | None
    stale: dict | None  # who held the file before, when it was left behind by a process that had ended

    def release(self) -> None:
        """Free the lock (idempotent). The file stays, emptied: only a process that died holding the lock
        leaves its details there (what `stale` reports)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        _HELD.pop(str(self.path), None)


_HELD: dict[str, RunLock] = {}  # this process's locks, released when its command ends (release_run_locks)


def describe_holder(holder: dict | None) -> str:
    """'pid P on host H since T' from a lock file's content (what is known of it)."""
    if not holder:
        return "a process that left no details"
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"


def _read_holder(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def take_run_lock(output_dir: Path) -> RunLock:
    """Lock `output_dir` for this process (created if missing) and record who holds it.

    Raises ConfigError naming the holder (pid, host, start time) when another live process holds it.
    A lock file whose lock can be taken was left by a process that ended: taken over, `stale` says whose.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _read_holder(fd)
        os.close(fd)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise ConfigError(
            f"`training.output_dir` = {output_dir} is in use by another run: {describe_holder(holder)} holds "
            f"{path}. Wait for it to end (or stop it), or choose another output_dir; two runs in one "
            f"directory would write each other's checkpoints and logs.") from None
    previous = _read_holder(fd)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    lock = RunLock(path=path, fd=fd, stale=previous)
    _HELD[str(path)] = lock
    return lock


def stale_note(lock: RunLock) -> str | None:
    """A line for the log when `lock` took over a file left by an ended process, else None."""
    if not lock.stale:
        return None
    return (f"{lock.path} was left by {describe_holder(lock.stale)}, which has ended (its lock was free): "
            f"stale, taken over")


def release_run_locks() -> None:
    """Release every run lock this process holds (a command run in process must not keep its directory
    locked after it returns)."""
    for lock in list(_HELD.values()):
        lock.release()
