"""The prediction record: one JSON line per ground-truth record, written by `python -m src.infer` and read
by `src.eval` and `src.vis`.

A line: `source` (the record's file:line), `image`, `width`, `height`, `raw` (the model's answer text),
`objects` (`{"kind": a geometry kind's key, "points": [...] in pixels of the original image, "desc", "score"}`:
the object record's JSON form, `src.datasets.objects.GeoObject.to_json`),
`parse_error` (None when the whole answer was read), and what the parser saw: `answer_format`
(json | legacy | unknown), `truncated` (the list left open, or generation stopped by `max_new_tokens`),
`bad_entries`.

Reading is tolerant, as predictions come from elsewhere too: a malformed object is dropped and counted,
a missing score becomes 1.0 and is counted, a line that is not a JSON object is reported and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from src.config.atomic import write_then_rename
from src.datasets.objects import GeoObject, read_objects

PredictedObject = GeoObject
"""A predicted object is the shared object record (src/datasets/objects.py), in pixels of the original image."""


@dataclass(slots=True)
class PredictionLine:
    """The prediction for one record (see the module docstring for the JSON form)."""

    source: str
    image: str
    width: int | None = None
    height: int | None = None
    raw: str = ""
    objects: list[GeoObject] = field(default_factory=list)
    parse_error: str | None = None
    answer_format: str | None = None
    truncated: bool = False
    bad_entries: int = 0
    # Counted while reading, never written:
    invalid_objects: int = 0
    scores_missing: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this line (counts of reading left out)."""
        counted = ("invalid_objects", "scores_missing")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in counted}
        out["objects"] = [o.to_json() for o in self.objects]
        return out

    @classmethod
    def from_json(cls, row: dict[str, Any] | None) -> PredictionLine:
        """A line from its JSON object, keeping the usable objects and counting the others.

        The objects are read by `src.datasets.objects.read_objects`: one needs a `kind` of the geometry
        registry (src/datasets/kinds/) with its count of finite `points`; `desc` defaults to ""; a missing or
        non-numeric `score` becomes 1.0 and is counted in `scores_missing`.
        """
        row = row or {}
        objects, invalid, no_score = read_objects(row.get("objects"))
        return cls(source=str(row.get("source", "")), image=row.get("image"), width=row.get("width"),
                   height=row.get("height"), raw=row.get("raw", ""), objects=objects,
                   parse_error=row.get("parse_error"), answer_format=row.get("answer_format"),
                   truncated=bool(row.get("truncated", False)), bad_entries=int(row.get("bad_entries") or 0),
                   invalid_objects=invalid, scores_missing=no_score)


def write_predictions(lines: Iterable[PredictionLine], path: Path) -> Path:
    """Write one JSON line per prediction to `path` (its folder is created); return `path`. The lines go to
    `<path>.partial`, renamed onto `path` once all are written: a failure on the way (`lines` raising, a full
    disk) leaves an earlier `path` as it was (src/config/atomic.py)."""
    with write_then_rename(path) as fh:
        for line in lines:
            fh.write(json.dumps(line.to_json(), ensure_ascii=False) + "\n")
    return path


def read_prediction_rows(path: Path) -> tuple[list[dict], list[str]]:
    """The JSON objects of a prediction JSONL, and a message per line that is not one (skipped)."""
    rows, bad = [], []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(f"{path}:{number}: not valid JSON ({exc.msg})")
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad.append(f"{path}:{number}: not a JSON object")
    return rows, bad
