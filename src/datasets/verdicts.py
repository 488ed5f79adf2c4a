"""Validation once, remembered: the verdict on a JSONL file (its valid records and the problems of the
others), stored in a compact columnar form and reused while the file is unchanged.

A verdict is keyed on what it depends on: the file's absolute path, size, modification time and a SHA-1
digest of its whole content (so an edit keeping size and time is caught: measured 1.7 GB/s on one core,
67 ms for 30,000 dense lines (113 MB) against 37 s to validate them), the contract version
(`CONTRACT_VERSION`, raised whenever validation rules change) and the options that change the verdict (how
far images are checked). A changed file, rule or option misses and is validated again; a forced pass
(`revalidate`) replaces the stored verdict. A verdict made with every image decoded also answers a request
that checks headers only (it is the stricter of the two). Image files are checked when the verdict is made;
an image replaced afterwards is caught when training reads it (`custom.bad_records` decides) or by forcing a
full pass.

The store lives in `$GROUNDING_CACHE_DIR` (default `~/.cache/qwen3vl-grounding/verdicts`), one folder
per verdict: the records' numpy columns (src/datasets/columns.py) one `.npy` each, read back
memory-mapped (the ranks of a node share one copy in the page cache), and the problems as JSON. A
verdict is written into a temporary folder and renamed into place, so several processes may share the
store. The store is bounded: after each write, entries unused for `$GROUNDING_CACHE_MAX_AGE_DAYS` (default
30) are removed, then the least recently used ones until it holds at most `$GROUNDING_CACHE_MAX_MB`
(default 2048) MB; a read marks its entry used. A process still reading an evicted entry keeps its
memory-mapped columns (the files are unlinked, not cut).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.datasets.columns import COLUMNS, RecordTable, record_columns
from src.datasets.contract import NO_VALUE, Problem, Record

CONTRACT_VERSION = 7  # 3: .npy columns, mmapped; 4: ignore, category_id, supercategory; 5: quads in canonical order;
# 6: point_2d and polygon kinds, a value_counts column; 7: images over 200:1 refused, a turned TIFF's displayed size
CACHE_ENV = "GROUNDING_CACHE_DIR"
MAX_MB_ENV = "GROUNDING_CACHE_MAX_MB"
MAX_AGE_ENV = "GROUNDING_CACHE_MAX_AGE_DAYS"
DEFAULT_MAX_MB = 2048
DEFAULT_MAX_AGE_DAYS = 30
_READ_BYTES = 1 << 20
_LEFTOVER_S = 3600  # a temporary folder this old belongs to a writer that died


def default_store_dir() -> Path:
    """`$GROUNDING_CACHE_DIR` or `~/.cache/qwen3vl-grounding/verdicts`."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "qwen3vl-grounding" / "verdicts"


def content_id(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a verdict on `path` depends on in the file itself: absolute path, size, modification time and
    the SHA-1 of the whole content (the file is read once)."""
    file = Path(path).resolve()
    digest = hashlib.sha1()
    with file.open("rb") as fh:
        stat = os.fstat(fh.fileno())  # the size and time of the very file digested
        while chunk := fh.read(_READ_BYTES):
            digest.update(chunk)
    return {"file": str(file), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha1": digest.hexdigest()}


def file_key(path: str | os.PathLike[str], options: dict[str, Any], content: dict[str, Any] | None = None) -> str:
    """The verdict key of `path` as it is now (or as `content`, its `content_id`, says), under `options`."""
    identity = {**(content or content_id(path)), "contract": CONTRACT_VERSION, "options": options}
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:  # NaN too
        from src.config import ConfigError

        raise ConfigError(f"${name} = {value!r}: expected a number >= 0 (unset it for the default {default:g})")
    return number


def store_limits() -> tuple[int, float]:
    """(most bytes, longest unused seconds) the store keeps: $GROUNDING_CACHE_MAX_MB (default 2048) and
    $GROUNDING_CACHE_MAX_AGE_DAYS (default 30). Raises ConfigError naming the variable for a bad value."""
    max_mb = _env_number(MAX_MB_ENV, DEFAULT_MAX_MB)
    max_days = _env_number(MAX_AGE_ENV, DEFAULT_MAX_AGE_DAYS)
    return int(max_mb * (1 << 20)), max_days * 86400


def _tree_bytes(folder: Path) -> int:
    total = 0
    for child in folder.iterdir():
        try:
            total += child.stat().st_size
        except OSError:
            pass  # removed meanwhile by another process
    return total


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

    @staticmethod
    def _keys(path: str | os.PathLike[str], options: dict[str, Any]) -> list[str]:
        # A verdict with every image decoded answers a header-only request too: it is the stricter one.
        content = content_id(path)
        if options.get("check_image") == "header":
            return [file_key(path, {**options, "check_image": "decode"}, content), file_key(path, options, content)]
        return [file_key(path, options, content)]

    def get(self, path: str | os.PathLike[str], options: dict[str, Any]) -> Verdict | None:
        """The stored verdict on `path` as it is now, or None (never validated so, or changed since). Its
        records are memory-mapped: reading them costs page cache, shared by every process of the node.
        A hit marks the entry used (eviction removes the least recently used first)."""
        file = str(Path(path).resolve())
        for key in self._keys(path, options):
            verdict = self._read(self._path(key), file)
            if verdict is not None:
                try:
                    os.utime(self._path(key))  # used now (access times are often not kept: noatime)
                except OSError:
                    pass
                return verdict
        return None

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

    def put(self, path: str | os.PathLike[str], options: dict[str, Any], verdict: Verdict,
            key: str | None = None) -> Verdict:
        """Store `verdict` on `path` under `options`, replacing any entry there (a forced pass must not leave
        the old verdict in place); return it as stored (memory-mapped), or `verdict` itself should the entry
        not read back. `key`: the `file_key` taken before validating (the content the verdict is about);
        by default the file as it is now. Then evict what the limits say (`store_limits`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self._path(key or file_key(path, options))
        columns = record_columns(verdict.records)
        tmp = Path(tempfile.mkdtemp(dir=self.root, suffix=".tmp"))
        for name in COLUMNS:
            np.save(tmp / f"{name}.npy", np.asarray(columns[name]), allow_pickle=False)
        (tmp / "problems.json").write_text(json.dumps([_problem_json(p) for p in verdict.problems],
                                                      ensure_ascii=False), encoding="utf-8")
        try:
            os.rename(tmp, target)  # atomic: a reader sees no entry or the whole new one
        except OSError:  # an entry is there: move it aside, then put ours in its place
            old = Path(tempfile.mkdtemp(dir=self.root, suffix=".replaced"))
            try:
                os.replace(target, old)
            except OSError:
                pass  # another process moved it first
            try:
                os.rename(tmp, target)
            except OSError:  # another process put its verdict on the same content meanwhile: keep that one
                shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        if options.get("check_image") == "header":
            # A decoded verdict on the same content would answer before this fresher one (see `get`).
            shutil.rmtree(self._path(file_key(path, {**options, "check_image": "decode"})), ignore_errors=True)
        self.evict(keep=target)
        return self._read(target, str(Path(path).resolve())) or verdict

    def evict(self, keep: Path | None = None, now: float | None = None) -> list[Path]:
        """Remove entries unused for longer than the age limit, then the least recently used until the store
        is within its size limit (`store_limits`), never `keep`; also leftovers of writers that died.
        Returns the entries removed."""
        max_bytes, max_age = store_limits()
        now = time.time() if now is None else now
        entries, removed = [], []
        for child in self.root.iterdir() if self.root.is_dir() else ():
            try:
                used = child.stat().st_mtime
            except OSError:
                continue
            if child.suffix == ".verdict":
                entries.append((used, child))
            elif child.suffix in (".tmp", ".replaced", ".damaged") and now - used > _LEFTOVER_S:
                shutil.rmtree(child, ignore_errors=True)
        sizes = {entry: _tree_bytes(entry) for _, entry in entries}
        total = sum(sizes.values())
        for used, entry in sorted(entries, key=lambda e: e[0]):  # least recently used first
            if entry == keep or (now - used <= max_age and total <= max_bytes):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry]
            removed.append(entry)
        return removed
