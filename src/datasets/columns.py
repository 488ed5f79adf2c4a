"""Valid records in a compact columnar form: numpy arrays of offsets, sizes and coordinates.

A million records held as `Record` objects cost several KB each in Python objects; held here they cost
their coordinates (8 bytes each, float64, so the values stay exactly what validation produced) and a
few offsets. `RecordTable` makes a `Record` when one is asked for (the dataloader, per sample).

Image paths are kept as the file wrote them (relative to the JSONL file's folder, usually) and joined
with that folder when a record is made, so a long common prefix is not stored a million times.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from src.datasets import kinds as geometry_kinds
from src.datasets.contract import GroundingObject, Record, SourceRef

__all__ = ["COLUMNS", "NO_CATEGORY", "ColumnBuilder", "RecordSubset", "RecordTable", "all_ignored", "merge_columns",
           "record_columns"]

COLUMNS = ("lines", "width", "height", "clamped", "has_summary", "images", "image_offsets", "summaries",
           "summary_offsets", "descs", "desc_offsets", "obj_offsets", "point_starts", "kinds", "value_counts",
           "desc_ids", "points", "ignore", "category_ids", "super_ids", "base_dir")
"""The arrays of a record table (what `ColumnBuilder.columns` makes and a verdict stores, one file each)."""
_KEYS = geometry_kinds.KEYS
# Values per object of the kinds with a fixed count, by stored index (-1: the count varies, given per object).
_FIXED_COUNTS = tuple(-1 if k.values is None else k.values for k in geometry_kinds.KINDS.values())
NO_CATEGORY = np.iinfo(np.int64).min
"""`category_ids` of an object without one (the contract refuses this value as a category id)."""


def _blob(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unblob(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = data.tobytes()
    return [raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]


class ColumnBuilder:
    """Collects valid records, in file order, into the columns a `RecordTable` reads.

    `add` takes a record's fields as validation found them (no `Record` object is made on the fast path);
    `add_record` takes a `Record` (the exact per-record path, and tables built from records).
    """

    def __init__(self, base_dir: str):
        self.base_dir = os.path.abspath(base_dir)
        self.lines: list[int] = []
        self.widths: list[int] = []
        self.heights: list[int] = []
        self.clamped: list[int] = []
        self.images: list[str] = []
        self.summaries: list[str | None] = []
        self.object_counts: list[int] = []
        self.kinds: list[int] = []
        self.value_counts: list[int] = []
        self.desc_ids: list[int] = []
        self.descs: dict[str, int] = {}
        self.points: list[np.ndarray | list[float]] = []
        self.ignore: list[bool] = []
        self.category_ids: list[int] = []
        self.super_ids: list[int] = []

    def add(self, line: int, image: str, width: int, height: int, summary: str | None, kinds: list[int],
            descs: list[str], points: np.ndarray | list[float], clamped: int,
            extras: tuple[list[bool], list[int | None], list[str | None]] | None = None,
            value_counts: list[int] | np.ndarray | None = None) -> None:
        """One valid record: `image` as written in the file, `kinds` as the registry's indices (`order`),
        `points` every object's coordinates one after the other (already clamped), `extras` each object's
        (ignore, category_id, supercategory), None when no object has any of them, `value_counts` each
        object's number of values (None: every kind of the record has a fixed count)."""
        self.lines.append(line)
        self.widths.append(width)
        self.heights.append(height)
        self.clamped.append(clamped)
        self.images.append(image)
        self.summaries.append(summary)
        self.object_counts.append(len(kinds))
        self.kinds.extend(kinds)
        self.value_counts.extend(map(_FIXED_COUNTS.__getitem__, kinds) if value_counts is None else value_counts)
        ids = self.descs
        self.desc_ids.extend([ids.setdefault(d, len(ids)) for d in descs])
        self.points.append(points)
        if extras is None:
            n = len(kinds)
            self.ignore.extend([False] * n)
            self.category_ids.extend([NO_CATEGORY] * n)
            self.super_ids.extend([-1] * n)
            return
        ignores, categories, supers = extras
        self.ignore.extend(ignores)
        self.category_ids.extend([NO_CATEGORY if c is None else c for c in categories])
        self.super_ids.extend([-1 if s is None else ids.setdefault(s, len(ids)) for s in supers])

    def add_record(self, record: Record) -> None:
        """One valid `Record` (its image path is kept relative to this builder's folder when inside it)."""
        image = record.image
        if image.startswith(self.base_dir + os.sep):
            image = image[len(self.base_dir) + 1:]
        self.add(record.source.line, image, record.width, record.height, record.summary,
                 [geometry_kinds.index_of(o.kind) for o in record.objects], [o.desc for o in record.objects],
                 [v for o in record.objects for v in o.points], record.clamped,
                 ([o.ignore for o in record.objects], [o.category_id for o in record.objects],
                  [o.supercategory for o in record.objects]), [len(o.points) for o in record.objects])

    def columns(self) -> dict[str, np.ndarray]:
        """The collected records as numpy columns (see `RecordTable`)."""
        images, image_offsets = _blob(self.images)
        summaries, summary_offsets = _blob([s or "" for s in self.summaries])
        descs, desc_offsets = _blob(list(self.descs))
        obj_offsets = np.zeros(len(self.lines) + 1, dtype=np.int64)
        np.cumsum(self.object_counts, out=obj_offsets[1:])
        parts = [np.asarray(p, dtype=np.float64) for p in self.points]
        point_starts = np.zeros(len(self.lines) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in self.points], out=point_starts[1:])
        return {
            "lines": np.array(self.lines, dtype=np.int64),
            "width": np.array(self.widths, dtype=np.int32),
            "height": np.array(self.heights, dtype=np.int32),
            "clamped": np.array(self.clamped, dtype=np.int32),
            "has_summary": np.array([s is not None for s in self.summaries], dtype=bool),
            "images": images, "image_offsets": image_offsets,
            "summaries": summaries, "summary_offsets": summary_offsets,
            "descs": descs, "desc_offsets": desc_offsets,
            "obj_offsets": obj_offsets, "point_starts": point_starts,
            "kinds": np.array(self.kinds, dtype=np.uint8),
            "value_counts": np.array(self.value_counts, dtype=np.int32),
            "desc_ids": np.array(self.desc_ids, dtype=np.int32),
            "points": np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64),
            "ignore": np.array(self.ignore, dtype=bool),
            "category_ids": np.array(self.category_ids, dtype=np.int64),
            "super_ids": np.array(self.super_ids, dtype=np.int32),
            "base_dir": np.frombuffer(self.base_dir.encode("utf-8"), dtype=np.uint8),
        }


def record_columns(records: Sequence[Record], base_dir: str | None = None) -> dict[str, np.ndarray]:
    """Records as numpy columns (a RecordTable's own columns, as they are). Image paths inside `base_dir`
    (default: the folder of the first record's file) are kept relative to it."""
    if isinstance(records, RecordTable):
        return records.columns
    if base_dir is None:
        base_dir = os.path.dirname(records[0].source.file) if len(records) else os.sep
    builder = ColumnBuilder(base_dir)
    for record in records:
        builder.add_record(record)
    return builder.columns()


def _offsets_after(parts_offsets: list[np.ndarray]) -> np.ndarray:
    out, base = [np.zeros(1, dtype=np.int64)], 0
    for offsets in parts_offsets:
        out.append(offsets[1:] + base)
        base += int(offsets[-1])
    return np.concatenate(out)


def _remapped(ids: np.ndarray, names: list[str], index: dict[str, int]) -> np.ndarray:
    """A part's string ids into the merged table `index` (-1, "none", stays -1)."""
    if not len(ids):
        return ids
    table = np.array([index[d] for d in names] + [-1], dtype=np.int32)  # id -1 picks the last entry
    return table[ids]


def merge_columns(parts: list[dict[str, np.ndarray]], base_dir: str) -> dict[str, np.ndarray]:
    """The columns of several record tables of one file (same `base_dir`), one after the other."""
    if not parts:
        return ColumnBuilder(base_dir).columns()
    part_descs = [_unblob(p["descs"], p["desc_offsets"]) for p in parts]
    index: dict[str, int] = {}
    for names in part_descs:
        for d in names:
            index.setdefault(d, len(index))
    desc_blob, desc_offsets = _blob(list(index))
    merged = {key: np.concatenate([p[key] for p in parts])
              for key in ("lines", "width", "height", "clamped", "has_summary", "images", "summaries", "kinds",
                          "value_counts", "points", "ignore", "category_ids")}
    merged.update(image_offsets=_offsets_after([p["image_offsets"] for p in parts]),
                  summary_offsets=_offsets_after([p["summary_offsets"] for p in parts]),
                  obj_offsets=_offsets_after([p["obj_offsets"] for p in parts]),
                  point_starts=_offsets_after([p["point_starts"] for p in parts]), descs=desc_blob,
                  desc_offsets=desc_offsets, base_dir=parts[0]["base_dir"],
                  desc_ids=np.concatenate([_remapped(p["desc_ids"], names, index)
                                           for p, names in zip(parts, part_descs, strict=True)]),
                  super_ids=np.concatenate([_remapped(p["super_ids"], names, index)
                                            for p, names in zip(parts, part_descs, strict=True)]))
    return merged


class RecordTable(Sequence[Record]):
    """The valid records of one file, kept as numpy columns; a `Record` is made when one is asked for.

    Training asks for each record when the dataloader builds its row, so a run holds the columns, not a
    Python object per record. The columns may be memory-mapped files (a stored verdict): nothing here
    copies a whole column, so the processes of a node share one copy in the page cache.
    """

    def __init__(self, columns: dict[str, np.ndarray], file: str):
        self._columns = columns
        self._file = file
        self._base_dir = bytes(columns["base_dir"]).decode("utf-8")
        self._descs = _unblob(columns["descs"], columns["desc_offsets"])  # the distinct descriptions only

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
        first, last = int(obj_offsets[i]), int(obj_offsets[i + 1])
        kinds = c["kinds"][first:last].tolist()
        counts = c["value_counts"][first:last].tolist()
        descs = c["desc_ids"][first:last].tolist()
        ignores = c["ignore"][first:last].tolist()
        categories = c["category_ids"][first:last].tolist()
        supers = c["super_ids"][first:last].tolist()
        values = c["points"][int(c["point_starts"][i]):int(c["point_starts"][i + 1])].tolist()
        objects, pos = [], 0
        for kind, size, desc, ignore, category, sup in zip(kinds, counts, descs, ignores, categories, supers,
                                                           strict=True):
            objects.append(GroundingObject(kind=_KEYS[kind], points=tuple(values[pos:pos + size]),
                                           desc=self._descs[desc], ignore=ignore,
                                           category_id=None if category == NO_CATEGORY else category,
                                           supercategory=None if sup < 0 else self._descs[sup]))
            pos += size
        summary = (bytes(c["summaries"][summary_offsets[i]:summary_offsets[i + 1]]).decode("utf-8")
                   if c["has_summary"][i] else None)
        image = bytes(c["images"][image_offsets[i]:image_offsets[i + 1]]).decode("utf-8")
        return Record(image=os.path.normpath(os.path.join(self._base_dir, image)),
                      width=int(c["width"][i]), height=int(c["height"][i]), objects=tuple(objects), summary=summary,
                      source=SourceRef(file=self._file, line=int(c["lines"][i])), clamped=int(c["clamped"][i]))


def all_ignored(records: Sequence[Record]) -> np.ndarray:
    """Indices of the records that have objects and whose every object is an ignore region (training leaves
    them out: an empty answer would deny objects the region holds). Read from the columns where the records
    have them (no `Record` is made); a sequence of several parts (`ConcatRecords`) is read part by part."""
    parts = getattr(records, "parts", None)
    if parts is not None:
        found, start = [], 0
        for part in parts:
            found.append(all_ignored(part) + start)
            start += len(part)
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    if isinstance(records, RecordTable):
        c = records.columns
        offsets = np.asarray(c["obj_offsets"])
        counts = np.diff(offsets)
        owner = np.repeat(np.arange(len(counts)), counts)
        answered = np.bincount(owner[~np.asarray(c["ignore"], dtype=bool)], minlength=len(counts))
        return np.flatnonzero((counts > 0) & (answered == 0)).astype(np.int64)
    return np.array([i for i, r in enumerate(records) if r.objects and all(o.ignore for o in r.objects)],
                    dtype=np.int64)


class RecordSubset(Sequence[Record]):
    """Some records of a sequence (all but `left_out`, in order), without copying them (the records may be a
    lazy RecordTable)."""

    def __init__(self, records: Sequence[Record], left_out: np.ndarray):
        self.records = records
        self.kept = np.setdiff1d(np.arange(len(records), dtype=np.int64), left_out)

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, index):  # noqa: ANN001 - int or slice, as a list takes
        if isinstance(index, slice):
            return [self.records[int(i)] for i in self.kept[index]]
        return self.records[int(self.kept[index])]


def image_folders(records: Sequence[Record]) -> set[str]:
    """The distinct folders (normalised paths, as `Record.image` gives them) that hold the records' images.
    Read from the columns where the records have them (no `Record` is made: a million records take about a
    second); a sequence of several parts (`ConcatRecords`) or a subset is read part by part, a subset's
    left-out records included (what a file names, not what a run trains on)."""
    parts = getattr(records, "parts", None)
    if parts is not None:
        return set().union(*(image_folders(part) for part in parts))
    if isinstance(records, RecordSubset):
        return image_folders(records.records)
    if isinstance(records, RecordTable):
        c = records.columns
        blob, offsets = bytes(c["images"]), np.asarray(c["image_offsets"]).tolist()
        written = {blob[start:end].rpartition(b"/")[0] for start, end in zip(offsets, offsets[1:], strict=False)}
        base = bytes(c["base_dir"]).decode("utf-8")
        return {os.path.normpath(os.path.join(base, folder.decode("utf-8"))) for folder in written}
    return {os.path.dirname(record.image) for record in records}
