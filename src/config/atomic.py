"""An output file written whole or not at all.

The content goes to `<name>.partial` in the target's folder, is flushed to the disk, and only then renamed onto
the target (`os.replace`, atomic within one file system). A crash, an interrupt or a full disk while writing
leaves the earlier file as it was, never a shorter one that looks whole; the partial file is removed when the
write fails (one killed outright can stay, its name saying what it is). The lowest layer holds it so every
layer writes its outputs the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where `write_then_rename` writes `path` until it is complete: `<path>.partial`."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


@contextlib.contextmanager
def write_then_rename(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open the partial file of `path` for writing (text in UTF-8, or binary with a "b" mode; the folder is
    created); when the block ends, flush it to the disk and rename it onto `path`. When the block or the write
    fails, remove the partial file and raise: `path` is untouched. A symbolic link is followed (the file it
    names is replaced, the link stays); a path that exists and is not a regular file (a device, a pipe) is
    written directly."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(os.path.realpath(path))  # through a link: the file it names is replaced, the link stays
    if path.exists() and not path.is_file():  # a device or a pipe (/dev/stdout): written as it is, no rename
        with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        with open(partial, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # a full disk shows here at the latest, before the earlier file is replaced
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def write_text_then_rename(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` through `write_then_rename`; return `path`."""
    with write_then_rename(path) as fh:
        fh.write(text)
    return Path(path)
