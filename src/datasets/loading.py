"""Loading a split's records under the bad-record policy, so no record is ever dropped silently."""

from __future__ import annotations

import bisect
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.config.atomic import write_then_rename
from src.config.errors import UserError

from .columns import COLUMNS, RecordTable, merge_columns, record_columns
from .contract import ImageCheck, Problem, Record
from .template_tokens import TemplateTokens, default_tokens, record_token_problems
from .validation import byte_ranges, validate_file, validate_range
from .verdicts import Verdict, VerdictStore, file_key

PARALLEL_MIN_BYTES = 8 << 20  # smaller files validate faster in one process than workers start
WORKERS_ENV = "GROUNDING_VALIDATION_WORKERS"


def validation_workers() -> int:
    """Processes that validate a large file: $GROUNDING_VALIDATION_WORKERS, else every core this process may use."""
    value = os.environ.get(WORKERS_ENV, "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class DataError(UserError):
    """Invalid records under the `error` policy. `str(err)` lists every problem as file:line: field: ..."""

    def __init__(self, problems: list[Problem], path: str):
        self.problems = problems
        lines = [str(p) for p in problems]
        super().__init__(
            "\n".join(lines) + f"\n{len({(p.file, p.line) for p in problems})} invalid record(s) in {path}. "
            "Fix them (`python -m src.datasets validate FILE`), or set `custom.bad_records: skip` to train "
            "without them."
        )


@dataclass(slots=True)
class LoadedSplit:
    """The valid records of one JSONL file and the problems of the records left out."""

    path: str
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    from_store: bool = False  # the verdict was a stored one (the file unchanged since it was validated)

    @property
    def skipped_lines(self) -> list[tuple[str, int]]:
        """(file, line) of every record left out, once each, in file order."""
        return sorted({(p.file, p.line) for p in self.problems})


def _validate_in_parallel(file: str, check_image: ImageCheck, workers: int, track) -> tuple[RecordTable,
                                                                                          list[Problem]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    parts, problems = [], []
    # fork starts a worker in milliseconds, spawn in half a second; but once torch is loaded its OpenMP
    # state can deadlock a forked child, so then spawn.
    method = "spawn" if "torch" in sys.modules else "fork"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        # Byte ranges, not lines, go to the workers: each reads its piece itself, so this process neither
        # reads the file nor holds it (Executor.map submits every task at once).
        results = pool.map(partial(validate_range, file, check_image), byte_ranges(file))
        for columns, chunk_problems, _ in (track(results) if track else results):
            parts.append(columns)
            problems.extend(chunk_problems)
    return RecordTable(merge_columns(parts, os.path.dirname(file)), file), problems


def without_records(columns: dict[str, np.ndarray], left_out: np.ndarray) -> dict[str, np.ndarray]:
    """The columns of a record table (src/datasets/columns.py) less the records at `left_out`, every column
    rebuilt with numpy (no Record made); the distinct descs stay as they are (ids unchanged)."""
    keep = np.ones(len(columns["lines"]), dtype=bool)
    keep[np.asarray(left_out, dtype=np.int64)] = False

    def offsets(counts: np.ndarray) -> np.ndarray:
        out = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=out[1:])
        return out

    def spans(key: str) -> tuple[np.ndarray, np.ndarray]:  # (keep mask over the items, new offsets)
        counts = np.diff(np.asarray(columns[key]))
        return np.repeat(keep, counts), offsets(counts[keep])

    out: dict[str, np.ndarray] = {}
    image_keep, out["image_offsets"] = spans("image_offsets")
    summary_keep, out["summary_offsets"] = spans("summary_offsets")
    object_keep, out["obj_offsets"] = spans("obj_offsets")
    point_keep, out["point_starts"] = spans("point_starts")
    per = {"record": keep, "image": image_keep, "summary": summary_keep, "object": object_keep, "point": point_keep}
    for name in COLUMNS:
        if name in out:
            continue
        if name in _COLUMN_UNIT:
            out[name] = np.asarray(columns[name])[per[_COLUMN_UNIT[name]]]
        elif name in _COLUMN_KEPT:
            out[name] = columns[name]
        else:
            raise KeyError(f"without_records: column {name!r} has no rule; add it to _COLUMN_UNIT or _COLUMN_KEPT")
    return out


# What each column of a record table holds one entry per (without_records drops the entries of a left-out record).
_COLUMN_UNIT = {"lines": "record", "width": "record", "height": "record", "clamped": "record", "has_summary": "record",
                "images": "image", "summaries": "summary", "kinds": "object", "value_counts": "object",
                "desc_ids": "object", "ignore": "object", "category_ids": "object", "super_ids": "object",
                "points": "point"}
_COLUMN_KEPT = {"descs", "desc_offsets", "base_dir"}  # the distinct descs (ids stay valid), the folder


def _refuse_template_tokens(records: Sequence[Record], problems: list[Problem], tokens: TemplateTokens | None,
                            path: str | Path) -> tuple[Sequence[Record], list[Problem]]:
    """`records` less those whose desc or summary holds a template token, and `problems` with theirs, in line
    order."""
    file = records[0].source.file if len(records) else os.path.abspath(path)
    found, bad = record_token_problems(records, tokens or default_tokens(), file)
    if not found:
        return records, problems
    columns = record_columns(records)
    kept = RecordTable(without_records(columns, bad), file)
    return kept, sorted([*problems, *found], key=lambda p: p.line)


def validated_records(path: str | Path, *, check_image: ImageCheck = "header", store: VerdictStore | None = None,
                      revalidate: bool = False, track=None, workers: int | None = None,
                      parallel_min_bytes: int = PARALLEL_MIN_BYTES,
                      tokens: TemplateTokens | None = None) -> tuple[Sequence[Record], list[Problem], bool]:
    """(valid records, problems, whether the verdict came from `store`) of `path`.

    With a store, an unchanged file's stored verdict is reused (unless `revalidate`), and a fresh
    verdict is stored for the next run (src/datasets/verdicts.py). A file of `parallel_min_bytes` or
    more is validated by `workers` processes (default: every core), each reading byte ranges of it, with the
    result one process gives. The records are a `RecordTable` (numpy columns) either way.

    A record whose `desc` or `summary` holds a template token (`tokens`, default Qwen's control tokens and
    ms-swift's placeholders: src/datasets/template_tokens.py) is invalid: it gets a problem and leaves the
    records. That pass runs on every call, stored verdict or not (a verdict never depends on the token set, so
    another model's tokens are never answered by a stale verdict); it reads only the distinct descs and the
    summaries.
    """
    # True and "decode" both decode every image: one verdict serves both.
    options = {"check_image": "decode" if check_image is True else check_image}
    if store is not None and not revalidate:
        verdict = store.get(path, options)
        if verdict is not None:
            return (*_refuse_template_tokens(verdict.records, verdict.problems, tokens, path), True)
    # The content validated is the content the verdict is stored under, even if the file changes meanwhile.
    key = file_key(path, options) if store is not None else None
    file = os.path.abspath(path)
    workers = validation_workers() if workers is None else workers
    if workers > 1 and os.path.getsize(file) >= parallel_min_bytes:
        records, problems = _validate_in_parallel(file, check_image, workers, track)
    else:
        records, problems = validate_file(file, check_image=check_image, track=track)
    if store is not None and file_key(path, options) == key:  # a file changed while validated is not stored
        # Read back memory-mapped: this process too shares the node's one copy.
        records = store.put(path, options, Verdict(records=records, problems=problems), key=key).records
    return (*_refuse_template_tokens(records, problems, tokens, path), False)


def load_split(path: str | Path, policy: str, *, check_image: ImageCheck = "header",
               store: VerdictStore | None = None, revalidate: bool = False,
               tokens: TemplateTokens | None = None) -> LoadedSplit:
    """Read and validate every record of `path` (through `store` when given, see `validated_records`).

    policy "error": raise DataError listing every problem if any record is invalid.
    policy "skip": keep the valid records and return the problems of the others.
    """
    if policy not in ("error", "skip"):
        raise ValueError(f"unknown bad-record policy {policy!r}; valid: error, skip")
    records, problems, stored = validated_records(path, check_image=check_image, store=store, revalidate=revalidate,
                                                  tokens=tokens)
    if problems and policy == "error":
        raise DataError(problems, str(path))
    return LoadedSplit(path=str(path), records=records, problems=problems, from_store=stored)


class ConcatRecords(Sequence[Record]):
    """Several splits' records as one sequence (shards in order), without copying them into a list."""

    def __init__(self, parts: Sequence[Sequence[Record]]):
        self.parts = list(parts)
        self.starts = [0]
        for part in self.parts:
            self.starts.append(self.starts[-1] + len(part))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index):  # noqa: ANN001 - int or slice, as a list takes
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range for {len(self)} records")
        part = bisect.bisect_right(self.starts, index) - 1
        return self.parts[part][index - self.starts[part]]


def load_shards(files: Sequence[str], policy: str, *, store: VerdictStore | None = None,
                revalidate: bool = False, tokens: TemplateTokens | None = None, check_image: ImageCheck = "header",
                ) -> tuple[list[LoadedSplit], Sequence[Record]]:
    """Each file's LoadedSplit (with `load_split`, template tokens `tokens`, images checked as `check_image`
    says) and all their records, shard after shard."""
    splits = [load_split(f, policy, store=store, revalidate=revalidate, tokens=tokens, check_image=check_image)
              for f in files]
    if len(splits) == 1:
        return splits, splits[0].records
    return splits, ConcatRecords([s.records for s in splits])


def write_skipped(splits: list[LoadedSplit], out_file: Path) -> Path | None:
    """Write one JSON line per problem of the skipped records to `out_file`; None when nothing was skipped.

    The lines an earlier start of the same run appended during training (`"stage": "training"`, see
    `rows.BadImages`) are kept after this validation's lines: a resume must not lose the record of what
    training skipped. The file is replaced whole (written beside it, then renamed)."""
    problems = [p for s in splits for p in s.problems]
    kept = _training_lines(out_file)
    if not problems and not kept:
        return None
    with write_then_rename(out_file) as fh:
        for p in problems:
            fh.write(json.dumps({"file": p.file, "line": p.line, "field": p.field, "message": p.message,
                                 "value": repr(p.value)}, ensure_ascii=False) + "\n")
        fh.writelines(kept)
    return out_file


def _training_lines(listing: Path) -> list[str]:
    """The lines of an existing skipped-records listing that training appended (each ending in a newline)."""
    if not listing.is_file():
        return []
    kept = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: nothing to keep of it
        if isinstance(entry, dict) and entry.get("stage") == "training":
            kept.append(line + "\n")
    return kept
