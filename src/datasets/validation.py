"""Validating many records fast: the contract's checks for a whole chunk of lines at once.

`contract.parse_record` is the authority: it checks one record and names every problem. Doing that per
object in Python costs about 10 µs an object, a minute and a half for a million dense records. Here a
chunk of lines is checked in two passes instead:

1. a structural pass in plain Python (keys, types, lengths: the cheapest checks there are), which
   collects the coordinates of every well-formed record of the chunk into one flat list;
2. the numeric checks (finite, inside the image within the clamp tolerance, then each geometry kind's own
   rules, `GeometryKind.problem_codes` of the registry in `src/datasets/kinds/`: box corners in order, quads
   and polygons simple and of non-zero area) with numpy over the whole chunk, a kind's objects of one value
   count at once; quads and polygons are put in the canonical vertex order (`GeometryKind.canonical`).

A record either check doubts goes through `parse_record`, which reports exactly what is wrong, so the
problems, the clamping and the records are the same as checking record by record (a test holds them
equal on a mixed file). Valid records go straight into columns (`src/datasets/columns.py`): no `Record`
object is made.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from . import kinds as geometry_kinds
from .columns import ColumnBuilder, RecordTable, merge_columns
from .contract import (
    CLAMP_TOLERANCE_PX,
    OBJECT_KEYS,
    ImageCheck,
    Problem,
    Record,
    SourceRef,
    check_image_file,
    parse_line,
    parse_record,
)
from .images import ImageError

__all__ = ["CHUNK_LINES", "byte_ranges", "load_records", "numbered_range", "validate_file", "validate_lines",
           "validate_range"]

CHUNK_LINES = 1000  # lines per chunk: the unit of the numpy pass (a parallel worker checks its piece chunk by chunk)
_RECORD_KEYS = frozenset({"images", "objects", "width", "height", "summary"})
_REQUIRED_KEYS = frozenset({"images", "objects", "width", "height"})
_KIND_INDEX = {key: kind.order for key, kind in geometry_kinds.KINDS.items()}  # geometry key -> stored index
_NUMBER_TYPES = frozenset({int, float})  # bool is neither
_DICT, _TWO, _STR, _LIST = {dict}, {2}, {str}, {list}
_FIXED = tuple(-1 if k.values is None else k.values for k in geometry_kinds.KINDS.values())  # values per index
_KIND_BY_INDEX = tuple(geometry_kinds.KINDS.values())
# Whether a kind's stored form differs from what a file wrote (a vertex order): the others need no pass.
_REORDERS = tuple(type(k).canonical is not geometry_kinds.GeometryKind.canonical for k in _KIND_BY_INDEX)


def _counts_ok(kinds: list[int], counts: list[int]) -> bool:
    """Whether each object's number of values suits its kind (a fixed count, or a variable one's rule)."""
    fixed = list(map(_FIXED.__getitem__, kinds))
    if counts == fixed:
        return True
    return all(f == n or (f < 0 and _KIND_BY_INDEX[k].count_ok(n)) for k, f, n in zip(kinds, fixed, counts,
                                                                                         strict=True))


_OBJECT_KEYS = frozenset(OBJECT_KEYS)
_INT64 = (-(2**63), 2**63)  # category_id bounds (exclusive): the lowest int64 marks "none" in the columns


def _rich_objects(objects: list[dict]) -> tuple | None:
    """(kinds, descs, points, (ignores, category_ids, supercategories)) of objects some of which carry the
    optional keys (ignore, category_id, supercategory, or no desc on an ignore region), each checked as
    `parse_record` would; None at the first doubt."""
    kinds, descs, points, ignores, categories, supers = [], [], [], [], [], []
    for item in objects:
        if not item.keys() <= _OBJECT_KEYS:
            return None
        present = [key for key in item if key in _KIND_INDEX]
        if len(present) != 1:
            return None
        kind = _KIND_INDEX[present[0]]
        value = item[present[0]]
        ignore = item.get("ignore", False)
        desc = item.get("desc", "" if ignore is True else None)
        category, supercategory = item.get("category_id"), item.get("supercategory")
        if (type(value) is not list or not _KIND_BY_INDEX[kind].count_ok(len(value)) or type(ignore) is not bool
                or type(desc) is not str or ("desc" in item and not desc.strip())
                or ("category_id" in item and (type(category) is not int or not _INT64[0] < category < _INT64[1]))
                or ("supercategory" in item and (type(supercategory) is not str or not supercategory.strip()))):
            return None
        kinds.append(kind)
        descs.append(desc)
        points.append(value)
        ignores.append(ignore)
        categories.append(category)
        supers.append(supercategory)
    return kinds, descs, points, (ignores, categories, supers)


def _structure(obj: dict) -> tuple | None:
    """(image, width, height, summary, kinds, descs, values, extras, counts) of a record whose keys, types and
    lengths are all as the contract says, else None (the record then goes through `parse_record`). `extras` is
    None when every object is a plain geometry + desc, else (ignores, category_ids, supercategories); `counts`
    each object's number of values. Numbers are not checked here beyond their type."""
    keys = obj.keys()
    if not (_REQUIRED_KEYS <= keys <= _RECORD_KEYS):
        return None
    images, width, height, summary, objects = (obj["images"], obj["width"], obj["height"], obj.get("summary"),
                                               obj["objects"])
    if (type(images) is not list or len(images) != 1 or type(images[0]) is not str or not images[0].strip()
            or type(width) is not int or type(height) is not int or width <= 0 or height <= 0
            or (summary is not None and type(summary) is not str) or type(objects) is not list):
        return None
    if not objects:
        return images[0], width, height, summary, [], [], [], None, []
    # Whole-list checks run in C (map, set, list comparison): a loop with a branch per object costs 3x more.
    if set(map(type, objects)) != _DICT:
        return None
    if set(map(len, objects)) != _TWO:  # some object carries an optional key
        rich = _rich_objects(objects)
        if rich is None:
            return None
        kinds, descs, points, extras = rich
        return (images[0], width, height, summary, kinds, descs, list(chain.from_iterable(points)), extras,
                list(map(len, points)))
    # Two keys each: the one that is not "desc" is the geometry (an object without a desc fails below).
    keys = [second if first == "desc" else first for first, second in objects]
    kinds = list(map(_KIND_INDEX.get, keys))
    if None in kinds:
        return None
    descs = [item.get("desc") for item in objects]
    points = list(map(dict.__getitem__, objects, keys))
    if set(map(type, descs)) != _STR or not all(map(str.strip, descs)) or set(map(type, points)) != _LIST:
        return None
    counts = list(map(len, points))
    if not _counts_ok(kinds, counts):
        return None
    values = list(chain.from_iterable(points))
    return images[0], width, height, summary, kinds, descs, values, None, counts


def _geometry_ok(candidates: list[tuple], flat: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the candidates' coordinates (`flat`, one after the other): (record is valid, clamped values,
    clamped count per record), every numeric check of the contract done at once."""
    n = len(candidates)
    object_counts = np.array([len(c[4]) for c in candidates], dtype=np.int64)
    kinds = np.fromiter((k for c in candidates for k in c[4]), dtype=np.int64, count=int(object_counts.sum()))
    sizes = np.fromiter((n for c in candidates for n in c[8]), dtype=np.int64, count=len(kinds))
    object_record = np.repeat(np.arange(n), object_counts)
    value_record = np.repeat(object_record, sizes)
    object_starts = np.cumsum(sizes) - sizes
    is_x = (np.arange(len(value_record)) - np.repeat(object_starts, sizes)) % 2 == 0
    widths = np.array([c[1] for c in candidates], dtype=np.float64)
    heights = np.array([c[2] for c in candidates], dtype=np.float64)
    limit = np.where(is_x, widths[value_record], heights[value_record])
    try:
        if set(map(type, flat)) <= _NUMBER_TYPES:
            values = np.array(flat, dtype=np.float64)
            bad_value = ~np.isfinite(values)
        else:  # some value is not a number: only the records holding one need the closer look
            numeric = np.fromiter((type(v) in _NUMBER_TYPES for v in flat), dtype=bool, count=len(flat))
            values = np.array([v if ok else 0.0 for v, ok in zip(flat, numeric, strict=True)], dtype=np.float64)
            bad_value = ~numeric | ~np.isfinite(values)
    except OverflowError:  # an integer beyond any float: every record of the chunk is checked on its own
        return np.zeros(n, dtype=bool), np.zeros(len(flat)), np.zeros(n, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        clipped = np.minimum(np.maximum(values, 0.0), limit)
        bad_value |= np.abs(clipped - values) > CLAMP_TOLERANCE_PX
    bad = np.bincount(value_record[bad_value], minlength=n) > 0
    bad_object = np.zeros(len(kinds), dtype=bool)
    clamped = np.bincount(value_record, weights=clipped != values, minlength=n).astype(np.int64)
    # One numpy pass per (kind, value count): each kind's own rules, then its stored (canonical) form, written
    # in place (the groups' values do not overlap).
    group = kinds * (int(sizes.max(initial=0)) + 1) + sizes
    for key in np.unique(group):
        members = np.flatnonzero(group == key)
        kind, size = _KIND_BY_INDEX[int(kinds[members[0]])], int(sizes[members[0]])
        at = object_starts[members][:, None] + np.arange(size)
        rows = clipped[at]
        with np.errstate(invalid="ignore"):
            bad_object[members] = kind.problem_codes(rows) != 0
            if _REORDERS[kind.order]:
                clipped[at] = kind.canonical(rows)
    bad |= np.bincount(object_record[bad_object], minlength=n) > 0
    return ~bad, clipped, clamped


def validate_lines(file: str, check_image: ImageCheck, numbered: list[tuple[int, bytes]],
                   image_sizes: dict[str, tuple[int, int] | ImageError] | None = None,
                   ) -> tuple[dict[str, np.ndarray], list[Problem], int]:
    """Validate some numbered raw lines of `file` (a chunk, or one worker's share).

    Returns (the valid records as columns, every problem found in line order, lines seen): what checking
    each line with `parse_record` gives. `image_sizes` remembers image headers across calls.
    """
    file = os.path.abspath(file)
    base_dir = os.path.dirname(file)
    sizes = {} if image_sizes is None else image_sizes
    objects: list[tuple[int, dict | Problem]] = []
    for number, raw in numbered:
        objects.extend(parse_line(file, number, raw))
    candidates, flat, candidate_of = [], [], {}
    for position, (_, obj) in enumerate(objects):
        if isinstance(obj, dict):
            found = _structure(obj)
            if found is not None:
                candidate_of[position] = len(candidates)
                candidates.append(found)
                flat += found[6]
    ok, clipped, clamped = (_geometry_ok(candidates, flat) if candidates
                            else (np.zeros(0, dtype=bool), np.zeros(0), np.zeros(0, dtype=np.int64)))
    starts = np.concatenate([[0], np.cumsum([len(c[6]) for c in candidates], dtype=np.int64)])
    joined: dict[str, str] = {}  # image path as written -> absolute path
    builder = ColumnBuilder(base_dir)
    problems: list[Problem] = []
    for position, (line, obj) in enumerate(objects):
        if isinstance(obj, Problem):
            problems.append(obj)
            continue
        index = candidate_of.get(position)
        if index is not None and ok[index]:
            image, width, height, summary, kinds, descs, _, extras, counts = candidates[index]
            if check_image:
                path = joined.get(image)
                if path is None:
                    path = joined[image] = os.path.normpath(os.path.join(base_dir, image))
                if check_image_file(path, width, height, decode=check_image != "header", sizes=sizes) is not None:
                    index = None  # parse_record names what is wrong with the image
            if index is not None:
                builder.add(line, image, width, height, summary, kinds, descs,
                            clipped[starts[index]:starts[index + 1]], int(clamped[index]), extras, counts)
                continue
        record, found = parse_record(obj, SourceRef(file=file, line=line), Path(base_dir), check_image=check_image,
                                     image_sizes=sizes)
        problems.extend(found)
        if record is not None:
            builder.add_record(record)
    return builder.columns(), problems, len(numbered)


RANGE_BYTES = 4 << 20  # bytes of the file per parallel worker's task


def byte_ranges(file: str, target_bytes: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(start, end, number of the first line) of consecutive pieces of `file` of about `target_bytes` (default
    RANGE_BYTES), each ending after a newline (or at the end): a worker reads its piece itself, so only these
    numbers travel."""
    target_bytes = target_bytes or RANGE_BYTES
    size = os.path.getsize(file)
    if size == 0:
        return
    with open(file, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start, line = 0, 1
        while start < size:
            end = data.find(b"\n", min(start + target_bytes, size) - 1)
            end = size if end < 0 else end + 1
            yield start, end, line
            line += data[start:end].count(b"\n")
            start = end


def numbered_range(file: str, start: int, end: int, first_line: int) -> list[tuple[int, bytes]]:
    """The numbered raw lines of `file` between bytes `start` and `end` (a piece from `byte_ranges`), a UTF-8
    BOM at the file's start removed: the lines as iterating over the file gives them."""
    with open(file, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    if start == 0 and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = [raw + b"\n" for raw in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]  # what followed the last newline: nothing, or a last line without one
    if not lines[-1]:
        lines.pop()
    return list(enumerate(lines, start=first_line))


def validate_range(file: str, check_image: ImageCheck, piece: tuple[int, int, int],
                   image_sizes: dict[str, tuple[int, int] | ImageError] | None = None,
                   ) -> tuple[dict[str, np.ndarray], list[Problem], int]:
    """Validate the lines of a piece of `file` (from `byte_ranges`, read here) a chunk of CHUNK_LINES at a
    time: (its records as columns, its problems, how many lines it held). One parallel worker's task, and
    the single-process pass's step."""
    numbered = numbered_range(file, *piece)
    parts, problems = [], []
    for k in range(0, len(numbered), CHUNK_LINES):
        columns, found, _ = validate_lines(file, check_image, numbered[k:k + CHUNK_LINES], image_sizes)
        parts.append(columns)
        problems += found
    return merge_columns(parts, os.path.dirname(os.path.abspath(file))), problems, len(numbered)


def validate_file(path: str | os.PathLike[str], *, check_image: ImageCheck = True,
                  track: Callable[[Iterable], Iterable] | None = None) -> tuple[RecordTable, list[Problem]]:
    """Every valid record of a JSONL file as a `RecordTable`, and every problem found, in file order, checked
    in this process (`src.datasets.loading.validated_records` spreads a large file over several). A line with
    problems contributes no record; a missing file raises ``FileNotFoundError``. `track` wraps the
    iteration over each chunk's (columns, problems, lines) (a progress bar)."""
    file = os.path.abspath(path)
    parts, problems = [], []
    sizes: dict[str, tuple[int, int] | ImageError] = {}
    results = (validate_range(file, check_image, piece, sizes) for piece in byte_ranges(file))
    for columns, found, _ in (track(results) if track else results):
        parts.append(columns)
        problems += found
    if len(parts) == 1:
        return RecordTable(parts[0], file), problems
    return RecordTable(merge_columns(parts, os.path.dirname(file)), file), problems


def load_records(path: str | os.PathLike[str], *, check_image: ImageCheck = True,
                 track: Callable[[Iterable], Iterable] | None = None) -> tuple[list[Record], list[Problem]]:
    """`validate_file`, with the records as a list of `Record` (for the tools that read every record anyway:
    evaluation, pictures, conversion)."""
    table, problems = validate_file(path, check_image=check_image, track=track)
    return list(table), problems
