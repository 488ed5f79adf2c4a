"""Validation once, remembered: the verdict on a JSONL file (its valid records and the problems of the
others), stored in a compact columnar form and reused while the file is unchanged.

A verdict is keyed on what it depends on: the file's absolute path, size, modification time and a
digest of its first and last MiB (a content check that catches an edit keeping size and time), the
contract version (`CONTRACT_VERSION`, raised whenever validation rules change) and the options that
change the verdict (how far images are checked). A changed file, rule or option misses and is validated
again. Image files are checked when the verdict is made; an image replaced afterwards is caught when
training reads it (the error names its record) or by forcing a full pass (`revalidate`).

The store lives in `$GROUNDING_CACHE_DIR` (default `~/.cache/qwen3vl-grounding/verdicts`), one folder
per verdict: the records' numpy columns (src/datasets/columns.py) one `.npy` each, read back
memory-mapped (the ranks of a node share one copy in the page cache), and the problems as JSON. A
verdict is written into a temporary folder and renamed into place, so several processes may share the
store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.datasets.columns import COLUMNS, RecordTable, record_columns
from src.datasets.contract import NO_VALUE, Problem, Record

CONTRACT_VERSION = 4  # 3: one folder of .npy columns per verdict, memory-mapped; 4: ignore, category_id, supercategory
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
    """Verdicts on JSONL files, one folder each under `root` (see the module docstring)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_store_dir()

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.verdict"

    def get(self, path: str | os.PathLike[str], options: dict[str, Any]) -> Verdict | None:
        """The stored verdict on `path` as it is now, or None (never validated so, or changed since). Its
        records are memory-mapped: reading them costs page cache, shared by every process of the node."""
        return self._read(self._path(file_key(path, options)), str(Path(path).resolve()))

    @staticmethod
    def _read(stored: Path, file: str) -> Verdict | None:
        if not stored.is_dir():
            return None
        try:
            columns = {name: np.load(stored / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in COLUMNS}
            problems = json.loads((stored / "problems.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is a miss: validate again and replace it
        return Verdict(records=RecordTable(columns, file), problems=[_problem(p, file) for p in problems])

    def put(self, path: str | os.PathLike[str], options: dict[str, Any], verdict: Verdict) -> Verdict:
        """Store `verdict` on `path` (as it is now) under `options`; return it as stored (memory-mapped), or
        `verdict` itself should the entry not read back."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self._path(file_key(path, options))
        columns = record_columns(verdict.records)
        tmp = Path(tempfile.mkdtemp(dir=self.root, suffix=".tmp"))
        for name in COLUMNS:
            np.save(tmp / f"{name}.npy", np.asarray(columns[name]), allow_pickle=False)
        (tmp / "problems.json").write_text(json.dumps([_problem_json(p) for p in verdict.problems],
                                                      ensure_ascii=False), encoding="utf-8")
        try:
            os.rename(tmp, target)  # atomic: a reader sees no entry or the whole new one
        except OSError:  # an entry is there: another process's (keep it) or a damaged one (replace it)
            if self._read(target, str(path)) is None:
                damaged = Path(tempfile.mkdtemp(dir=self.root, suffix=".damaged"))
                os.replace(target, damaged)
                os.rename(tmp, target)
                shutil.rmtree(damaged, ignore_errors=True)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        return self._read(target, str(Path(path).resolve())) or verdict
