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
