"""The object record: one object of an image, the same type for ground truth, predictions, answers and rewards.

`GeoObject` is a geometry kind's key (`kind`, a key of the registry `src.datasets.kinds`) with its values
(`points`, interleaved x, y), a description, and what some holders add: a prediction's `score`, an
annotation's `ignore` flag and source category, the image of a turn an answer entry names. Which space
`points` are in is the holder's: pixels of the displayed image in a record (`src.datasets.contract.Record`, whose
`GroundingObject` is this type with the contract's rules) and in a prediction line
(`src.inference.predictions`); the answer's space (`emit_norm`, the 0..1000 grid for `norm1000`) for the objects
an answer holds (`src.datasets.builders.AnswerCodec`) and for the ground truth of the rewards
(`src.rewards.GroundTruth`).

Its JSON form (`GeoObject.to_json` / `read_objects`) is the one the prediction JSONL and COCO results rows use:
``{"kind", "points", "desc", "score"}``, plus ``ignore``, ``image``, ``category_id``, ``supercategory`` only when
set. This layer's modules import it downwards: inference, evaluation and rewards all build and read this type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.datasets import kinds
from src.datasets.geometry import is_finite_number

__all__ = ["GeoObject", "read_objects", "values_fit"]


@dataclass(frozen=True, slots=True)
class GeoObject:
    """One object: a geometry of a registered kind, its description and what its holder adds."""

    kind: str
    """The geometry's key in the kind registry (one of `src.datasets.kinds.KEYS`)."""
    points: tuple[float, ...]
    """The kind's values, interleaved x, y, in the holder's space (see the module docstring)."""
    desc: str
    """The description (an answer's ``label``); ``""`` when none was given."""
    score: float = 1.0
    """A prediction's confidence; 1.0 for ground truth and for predictions that came without one."""
    ignore: bool = False
    """An annotated region to ignore (crowd, illegible text): never answered, never a true or false positive."""
    image: int | None = None
    """Which image of a turn an answer entry is on (1-based), when the answer covers several; else None."""
    category_id: int | None = None
    """The source annotation's category id (COCO), when the record gave one."""
    supercategory: str | None = None
    """The source annotation's supercategory (COCO), when the record gave one."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object: ``kind``, ``points`` (a list), ``desc``, ``score``; ``ignore``, ``image``,
        ``category_id``, ``supercategory`` only when set. `read_objects` reads it back equal."""
        out: dict[str, Any] = {"kind": self.kind, "points": list(self.points), "desc": self.desc, "score": self.score}
        if self.ignore:
            out["ignore"] = True
        for key in ("image", "category_id", "supercategory"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def values_fit(kind: object, values: object) -> bool:
    """Whether `values` (a list or tuple) are usable values of the registered kind `kind`: the kind's count,
    every one a finite number, nothing the kind calls malformed (`GeometryKind.read_problem`: a box with
    swapped corners)."""
    spec = kinds.KINDS.get(kind) if isinstance(kind, str) else None
    return (spec is not None and isinstance(values, (list, tuple)) and spec.count_ok(len(values))
            and all(is_finite_number(v) for v in values) and spec.read_problem(values) is None)


def read_objects(items: object) -> tuple[list[GeoObject], int, int]:
    """The usable objects of a JSON list of objects (as `GeoObject.to_json` writes them), and the counts of
    (objects dropped as malformed, scores missing).

    An object needs a registered `kind` with its count of finite `points` that the kind does not call malformed
    (`values_fit`; else it is dropped and counted); `desc` defaults to "" (null too: not the text "None"); a
    missing or non-numeric `score` becomes 1.0 and is counted. `ignore`, `image`, `category_id`, `supercategory`
    are kept when they have their type. Anything but a list reads as no objects.
    """
    objects, invalid, no_score = [], 0, 0
    for item in items if isinstance(items, list) else []:
        kind = item.get("kind") if isinstance(item, dict) else None
        points = item.get("points") if isinstance(item, dict) else None
        if not values_fit(kind, points):
            invalid += 1
            continue
        score = item.get("score")
        if not is_finite_number(score):
            no_score += 1
            score = 1.0
        image, category_id, supercategory = item.get("image"), item.get("category_id"), item.get("supercategory")
        objects.append(GeoObject(
            kind, tuple(float(v) for v in points), _text(item.get("desc")), float(score),
            ignore=item.get("ignore") is True,
            image=image if _is_int(image) else None,
            category_id=category_id if _is_int(category_id) else None,
            supercategory=supercategory if isinstance(supercategory, str) else None))
    return objects, invalid, no_score


def _text(value: object) -> str:
    """A desc as text, as the answer parser reads a label: null (or absent) is "" ("None" would be a label of its
    own), any other value its text."""
    return "" if value is None else str(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

