"""Validation once, remembered: the verdict on a JSONL file (its valid records and the problems of the
others), stored in a compact columnar form and reused while the file is unchanged.

A verdict is keyed on what it depends on: the file's absolute path, size, modification time and a
digest of its first and last MiB (a content check that catches an edit keeping size and time), the
contract version (`CONTRACT_VERSION`, raised whenever validation rules change) and the options that
change the verdict (how far images are checked). A changed file, rule or option misses and is validated
again. Image files are checked when the verdict is made; an image replaced afterwards is caught when
training reads it (the error names its record) or by forcing a full pass (`revalidate`).

The store lives in `$GROUNDING_CACHE_DIR` (default `~/.cache/qwen3vl-grounding/verdicts`), one `.npz`
per verdict: records as numpy columns (src/datasets/columns.py) and the problems as JSON. Writes go to a
temporary name and are renamed into place, so several processes may share the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.datasets.columns import RecordTable, record_columns
from src.datasets.contract import NO_VALUE, Problem, Record

CONTRACT_VERSION = 2  # 2: image paths stored as written, relative to the file's folder
CACHE_ENV = "GROUNDING_CACHE_DIR"
_EDGE_BYTES = 1 << 20


def default_store_dir() -> Path:
    """`$GROUNDING_CACHE_DIR` or `~/.cache/qwen3vl-grounding/verdicts`."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "qwen3vl-grounding" / "verdicts"


def file_key(path: str | os.PathLike[str], options: dict[str, Any]) -> str:
    """The verdict key of `path` as it is now, under `options` (see the module docstring)."""
    file = Path(path).resolve()
    stat = file.stat()
    edges = hashlib.sha1()
    with file.open("rb") as fh:
        edges.update(fh.read(_EDGE_BYTES))
        if stat.st_size > 2 * _EDGE_BYTES:
            fh.seek(-_EDGE_BYTES, os.SEEK_END)
        edges.update(fh.read(_EDGE_BYTES))
    identity = {"file": str(file), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "edges": edges.hexdigest(),
                "contract": CONTRACT_VERSION, "options": options}
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The valid records of a file and the problems of the others, as validation left them."""

    records: Sequence[Record]  # a list when just validated, a RecordTable when read from the store
    problems: list[Problem]


def _problem_json(p: Problem) -> dict[str, Any]:
    out: dict[str, Any] = {"line": p.line, "field": p.field, "message": p.message}
    if p.value is not NO_VALUE:
        try:  # values come from JSON lines, so they almost always go back into JSON as they were
            out["value"] = json.loads(json.dumps(p.value))
        except (TypeError, ValueError):
            out["value"] = repr(p.value)
    return out


def _problem(d: dict[str, Any], file: str) -> Problem:
    return Problem(file=file, line=d["line"], field=d["field"], message=d["message"], value=d.get("value", NO_VALUE))


class VerdictStore:
    """Verdicts on JSONL files, one `.npz` each under `root` (see the module docstring)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_store_dir()

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get(self, path: str | os.PathLike[str], options: dict[str, Any]) -> Verdict | None:
        """The stored verdict on `path` as it is now, or None (never validated so, or changed since)."""
        stored = self._path(file_key(path, options))
        if not stored.is_file():
            return None
        file = str(Path(path).resolve())
        try:
            with np.load(stored, allow_pickle=False) as data:
                columns = {k: data[k] for k in data.files if k != "problems"}
                problems = json.loads(data["problems"].tobytes().decode("utf-8"))
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is a miss: validate again and replace it
        return Verdict(records=RecordTable(columns, file), problems=[_problem(p, file) for p in problems])

    def put(self, path: str | os.PathLike[str], options: dict[str, Any], verdict: Verdict) -> Path:
        """Store `verdict` on `path` (as it is now) under `options`; return the entry's path."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self._path(file_key(path, options))
        columns = dict(record_columns(verdict.records))
        problems = json.dumps([_problem_json(p) for p in verdict.problems], ensure_ascii=False).encode("utf-8")
        columns["problems"] = np.frombuffer(problems, dtype=np.uint8)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **columns)
        os.replace(tmp, target)  # atomic: a reader sees the old entry or the whole new one
        return target
