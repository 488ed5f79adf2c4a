"""Validation once, remembered: the verdict on a JSONL file (its valid records and the problems of the
others), stored in a compact columnar form and reused while the file is unchanged.

A verdict is keyed on what it depends on: the file's absolute path, size, modification time and a
digest of its first and last MiB (a content check that catches an edit keeping size and time), the
contract version (`CONTRACT_VERSION`, raised whenever validation rules change) and the options that
change the verdict (how far images are checked). A changed file, rule or option misses and is validated
again. Image files are checked when the verdict is made; an image replaced afterwards is caught when
training reads it (the error names its record) or by forcing a full pass (`revalidate`).

The store lives in `$GROUNDING_CACHE_DIR` (default `~/.cache/qwen3vl-grounding/verdicts`), one `.npz`
per verdict: records as numpy columns (coordinates, offsets, description ids, image paths as one UTF-8
blob), about 100 bytes plus 40 per object, and the problems as JSON. Writes go to a temporary name and
are renamed into place, so several processes may share the store.
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

from src.datasets.contract import GEOMETRY_KINDS, NO_VALUE, GroundingObject, Problem, Record, SourceRef

CONTRACT_VERSION = 1
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


def _blob(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unblob(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = data.tobytes()
    return [raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The valid records of a file and the problems of the others, as validation left them."""

    records: Sequence[Record]  # a list when just validated, a RecordTable when read from the store
    problems: list[Problem]


def record_columns(records: Sequence[Record]) -> dict[str, np.ndarray]:
    """Records as numpy columns (a RecordTable's own columns, as they are)."""
    if isinstance(records, RecordTable):
        return records.columns
    objects = [o for r in records for o in r.objects]
    descs = sorted({o.desc for o in objects})
    desc_id = {d: i for i, d in enumerate(descs)}
    images, image_offsets = _blob([r.image for r in records])
    summaries, summary_offsets = _blob([r.summary or "" for r in records])
    desc_blob, desc_offsets = _blob(descs)
    obj_offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum([len(r.objects) for r in records], out=obj_offsets[1:])
    return {
        "lines": np.array([r.source.line for r in records], dtype=np.int64),
        "width": np.array([r.width for r in records], dtype=np.int64),
        "height": np.array([r.height for r in records], dtype=np.int64),
        "clamped": np.array([r.clamped for r in records], dtype=np.int64),
        "has_summary": np.array([r.summary is not None for r in records], dtype=bool),
        "images": images, "image_offsets": image_offsets,
        "summaries": summaries, "summary_offsets": summary_offsets,
        "descs": desc_blob, "desc_offsets": desc_offsets,
        "obj_offsets": obj_offsets,
        "kinds": np.array([GEOMETRY_KINDS.index(o.kind) for o in objects], dtype=np.uint8),
        "desc_ids": np.array([desc_id[o.desc] for o in objects], dtype=np.int32),
        # Coordinates as float64: the values stay exactly what validation produced (no rounding).
        "points": np.array([v for o in objects for v in o.points], dtype=np.float64),
    }


def _offsets_after(parts_offsets: list[np.ndarray]) -> np.ndarray:
    out, base = [np.zeros(1, dtype=np.int64)], 0
    for offsets in parts_offsets:
        out.append(offsets[1:] + base)
        base += int(offsets[-1])
    return np.concatenate(out)


def merge_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The columns of several record tables, one after the other (descriptions re-indexed)."""
    if not parts:
        return record_columns([])
    part_descs = [_unblob(p["descs"], p["desc_offsets"]) for p in parts]
    descs = sorted(set().union(*part_descs))
    index = {d: i for i, d in enumerate(descs)}
    desc_blob, desc_offsets = _blob(descs)
    merged = {key: np.concatenate([p[key] for p in parts])
              for key in ("lines", "width", "height", "clamped", "has_summary", "images", "summaries", "kinds",
                          "points")}
    merged.update(image_offsets=_offsets_after([p["image_offsets"] for p in parts]),
                  summary_offsets=_offsets_after([p["summary_offsets"] for p in parts]),
                  obj_offsets=_offsets_after([p["obj_offsets"] for p in parts]), descs=desc_blob,
                  desc_offsets=desc_offsets,
                  desc_ids=np.concatenate([np.array([index[d] for d in names], dtype=np.int32)[p["desc_ids"]]
                                           if len(p["desc_ids"]) else p["desc_ids"]
                                           for p, names in zip(parts, part_descs, strict=True)]))
    return merged


class RecordTable(Sequence[Record]):
    """The valid records of a verdict, kept as numpy columns; a `Record` is made when one is asked for.

    Holding a million records this way costs their coordinates (8 bytes each) and a few offsets, not a
    million Python objects; training asks for each record when the dataloader builds its row.
    """

    def __init__(self, columns: dict[str, np.ndarray], file: str):
        self._columns = columns
        self._file = file
        self._images = columns["images"].tobytes()
        self._summaries = columns["summaries"].tobytes()
        self._descs = _unblob(columns["descs"], columns["desc_offsets"])
        sizes = np.where(columns["kinds"] == GEOMETRY_KINDS.index("bbox_2d"), 4, 8)
        self._point_offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self._point_offsets[1:])

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The numpy columns the records are made from."""
        return self._columns

    def __len__(self) -> int:
        return len(self._columns["lines"])

    def __getitem__(self, index):  # noqa: ANN001 - int or slice, as a list takes
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range for {len(self)} records")
        return self._record(index)

    def _record(self, i: int) -> Record:
        c = self._columns
        image_offsets, summary_offsets, obj_offsets = c["image_offsets"], c["summary_offsets"], c["obj_offsets"]
        objects = []
        for k in range(int(obj_offsets[i]), int(obj_offsets[i + 1])):
            start, end = int(self._point_offsets[k]), int(self._point_offsets[k + 1])
            objects.append(GroundingObject(kind=GEOMETRY_KINDS[int(c["kinds"][k])],
                                           points=tuple(c["points"][start:end].tolist()),
                                           desc=self._descs[int(c["desc_ids"][k])]))
        summary = (self._summaries[summary_offsets[i]:summary_offsets[i + 1]].decode("utf-8")
                   if c["has_summary"][i] else None)
        return Record(image=self._images[image_offsets[i]:image_offsets[i + 1]].decode("utf-8"),
                      width=int(c["width"][i]), height=int(c["height"][i]), objects=tuple(objects), summary=summary,
                      source=SourceRef(file=self._file, line=int(c["lines"][i])), clamped=int(c["clamped"][i]))


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
