"""Loading a split's records under the bad-record policy, so no record is ever dropped silently."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .contract import ImageCheck, Problem, Record, load_records
from .verdicts import Verdict, VerdictStore


class DataError(Exception):
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


def validated_records(path: str | Path, *, check_image: ImageCheck = "header", store: VerdictStore | None = None,
                      revalidate: bool = False, track=None) -> tuple[list[Record], list[Problem], bool]:
    """(valid records, problems, whether the verdict came from `store`) of `path`.

    With a store, an unchanged file's stored verdict is reused (unless `revalidate`), and a fresh
    verdict is stored for the next run (src/datasets/verdicts.py).
    """
    options = {"check_image": check_image}
    if store is not None and not revalidate:
        verdict = store.get(path, options)
        if verdict is not None:
            return verdict.records, verdict.problems, True
    records, problems = load_records(Path(path), check_image=check_image, track=track)
    if store is not None:
        store.put(path, options, Verdict(records=records, problems=problems))
    return records, problems, False


def load_split(path: str | Path, policy: str, *, check_image: ImageCheck = "header",
               store: VerdictStore | None = None, revalidate: bool = False) -> LoadedSplit:
    """Read and validate every record of `path` (through `store` when given, see `validated_records`).

    policy "error": raise DataError listing every problem if any record is invalid.
    policy "skip": keep the valid records and return the problems of the others.
    """
    if policy not in ("error", "skip"):
        raise ValueError(f"unknown bad-record policy {policy!r}; valid: error, skip")
    records, problems, stored = validated_records(path, check_image=check_image, store=store, revalidate=revalidate)
    if problems and policy == "error":
        raise DataError(problems, str(path))
    return LoadedSplit(path=str(path), records=records, problems=problems, from_store=stored)


def write_skipped(splits: list[LoadedSplit], out_file: Path) -> Path | None:
    """Write one JSON line per problem of the skipped records to `out_file`; None when nothing was skipped."""
    problems = [p for s in splits for p in s.problems]
    if not problems:
        return None
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with out_file.open("w", encoding="utf-8") as fh:
        for p in problems:
            fh.write(json.dumps({"file": p.file, "line": p.line, "field": p.field, "message": p.message,
                                 "value": repr(p.value)}, ensure_ascii=False) + "\n")
    return out_file
