"""A data key's files: `custom.train_jsonl` / `val_jsonl` name one JSONL file, a list of shards, or a glob.

Sharded inputs are how a data set larger than one file comes in (Objects365-, OpenImages-sized sets are
usually written as many shards). Globs are expanded in sorted order, a list keeps its order, and a glob
that matches nothing is an error: a shard is never silently missing.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence

from .errors import ConfigError

GLOB_CHARS = frozenset("*?[")


def is_glob(path: str) -> bool:
    """True when `path` holds a glob character (`*`, `?`, `[`)."""
    return any(c in GLOB_CHARS for c in path)


def jsonl_files(value: str | Sequence[str] | None, key: str = "custom.train_jsonl") -> list[str]:
    """The files `value` names, in order: each path as it is, each glob expanded (sorted).

    Raises ConfigError naming `key` for a glob that matches no file."""
    if value is None:
        return []
    files = []
    for item in [value] if isinstance(value, str) else list(value):
        if is_glob(item):
            matched = sorted(glob.glob(item))
            if not matched:
                raise ConfigError(f"`{key}` = {item}: the pattern matches no file")
            files += matched
        else:
            files.append(item)
    return files


def files_to_read(explicit: str | None, value: str | Sequence[str] | None, key: str) -> list[str]:
    """The records a command reads: the file given on its command line (`--jsonl`), else the files of the
    config's `key` (its value `value`). Raises ConfigError when there are none or one does not exist."""
    import os

    files = [str(explicit)] if explicit else jsonl_files(value, key)
    if not files:
        raise ConfigError(f"no records to read: pass --jsonl or set `{key}` in the config")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ConfigError(f"records to read not found: {', '.join(missing)}")
    return files
