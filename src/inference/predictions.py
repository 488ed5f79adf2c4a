"""The prediction record: one JSON line per ground-truth record, written by `python -m src.infer` and read
by `src.eval` and `src.vis`.

A line: `source` (the record's file:line), `image`, `width`, `height`, `raw` (the model's answer text),
`objects` (`{"kind": "bbox_2d"|"quad", "points": [...] in pixels of the original image, "desc", "score"}`),
`parse_error` (None when the whole answer was read), and what the parser saw: `answer_format`
(json | legacy | unknown), `truncated` (the list left open, or generation stopped by `max_new_tokens`),
`bad_entries`.

Reading is tolerant, as predictions come from elsewhere too: a malformed object is dropped and counted,
a missing score becomes 1.0 and is counted, a line that is not a JSON object is reported and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from src.datasets.contract import POINTS_PER_KIND
from src.datasets.geometry import is_finite_number


@dataclass(frozen=True, slots=True)
class PredictedObject:
    """One predicted box or quad in pixels of the original image."""

    kind: str
    points: tuple[float, ...]
    desc: str
    score: float = 1.0


@dataclass(slots=True)
class PredictionLine:
    """The prediction for one record (see the module docstring for the JSON form)."""

    source: str
    image: str
    width: int | None = None
    height: int | None = None
    raw: str = ""
    objects: list[PredictedObject] = field(default_factory=list)
    parse_error: str | None = None
    answer_format: str | None = None
    truncated: bool = False
    bad_entries: int = 0
    # Counted while reading, never written:
    invalid_objects: int = 0
    scores_missing: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this line (counts of reading left out)."""
        out = asdict(self)
        out["objects"] = [{**asdict(o), "points": list(o.points)} for o in self.objects]
        del out["invalid_objects"], out["scores_missing"]
        return out

    @classmethod
    def from_json(cls, row: dict[str, Any] | None) -> PredictionLine:
        """A line from its JSON object, keeping the usable objects and counting the others.

        An object needs `kind` bbox_2d/quad with 4/8 finite `points`; `desc` defaults to ""; a missing or
        non-numeric `score` becomes 1.0 and is counted in `scores_missing`.
        """
        row = row or {}
        objects, invalid, no_score = [], 0, 0
        items = row.get("objects")
        for item in items if isinstance(items, list) else []:
            kind = item.get("kind") if isinstance(item, dict) else None
            points = item.get("points") if isinstance(item, dict) else None
            if (kind not in POINTS_PER_KIND or not isinstance(points, list) or len(points) != POINTS_PER_KIND[kind]
                    or not all(is_finite_number(v) for v in points)):
                invalid += 1
                continue
            score = item.get("score")
            if not is_finite_number(score):
                no_score += 1
                score = 1.0
            objects.append(PredictedObject(kind, tuple(float(v) for v in points), str(item.get("desc", "")),
                                           float(score)))
        return cls(source=str(row.get("source", "")), image=row.get("image"), width=row.get("width"),
                   height=row.get("height"), raw=row.get("raw", ""), objects=objects,
                   parse_error=row.get("parse_error"), answer_format=row.get("answer_format"),
                   truncated=bool(row.get("truncated", False)), bad_entries=int(row.get("bad_entries") or 0),
                   invalid_objects=invalid, scores_missing=no_score)


def write_predictions(lines: Iterable[PredictionLine], path: Path) -> Path:
    """Write one JSON line per prediction to `path` (its folder is created); return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
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
