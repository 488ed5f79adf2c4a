"""Training-time augmentation: the image and its annotations transformed together.

Ops come from the YAML list ``custom.augment`` (see :func:`parse_augment_ops`) and are applied
by :func:`augment` in list order, each with its own probability ``p``:

* ``hflip`` / ``vflip`` — mirror (``Image.transpose``);
* ``rot90`` — ``k * 90`` degrees counter-clockwise, ``k`` uniform in {1, 2, 3};
* ``rotate`` — a uniform angle in ``[-max_degrees, max_degrees]``, canvas expanded to fit
  (``Image.rotate(expand=True)``), new corners filled with grey 114;
* ``scale_crop`` — a random window of relative size ``s`` in ``[min_scale, max_scale]`` (same
  aspect as the image), resized back to the original size;
* ``color_jitter`` — brightness, contrast and saturation factors uniform in ``[1 - x, 1 + x]``;
  pixels only.

Geometry follows the pixels exactly (the transforms of :mod:`src.datasets.geometry`, which
match PIL's); each geometry kind says how it follows (`GeometryKind.transform` in
`src/datasets/kinds/`). A box stays a box: after a rotation it becomes the axis-aligned bounds of
its four rotated corners, so it grows to enclose the tilted object (it cannot be tighter without
the object's mask). A quad or polygon keeps its vertices, re-ordered canonically
(:func:`~src.datasets.geometry.canonical_polygon`) after every geometric op; a point moves.

Visibility (``rotate``, ``scale_crop``, each kind's `GeometryKind.clip`): an object whose area inside the
image divided by its whole area is below ``min_visibility``, or zero, is dropped; a point outside the image
is dropped. Survivors are clipped: boxes clamped to the image, quads' and polygons' vertices clamped; one that
clamping makes invalid (the kind's rules) is dropped too. Every drop is counted in the report by reason.

``summary`` is carried over unchanged: it is free text that may name dropped objects or
positions a flip has moved, so augment records used with a summary target with care.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from . import kinds as geometry_kinds
from .contract import GroundingObject, Record
from .geometry import (
    crop_points,
    hflip_points,
    is_finite_number,
    resize_points,
    rot90_points,
    rotate_points,
    vflip_points,
)

__all__ = ["AUGMENT_OPS", "FILL_RGB", "AugmentOp", "augment", "parse_augment_ops"]

FILL_RGB = (114, 114, 114)
"""Colour of the canvas a rotation uncovers."""

DROP_LOW_VISIBILITY = "low_visibility"
DROP_INVALID_AFTER_CLIP = "invalid_after_clip"


# ---------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Param:
    low: float
    high: float
    default: float | None = None  # None: required
    low_open: bool = False  # the range is (low, high] instead of [low, high]

    def range_text(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high


_P = _Param(0.0, 1.0)
_VISIBILITY = _Param(0.0, 1.0, default=0.5)
_JITTER = _Param(0.0, 1.0, default=0.0)

AUGMENT_OPS: dict[str, dict[str, _Param]] = {
    "hflip": {},
    "vflip": {},
    "rot90": {},
    "rotate": {"max_degrees": _Param(0.0, 180.0, low_open=True), "min_visibility": _VISIBILITY},
    "scale_crop": {
        "min_scale": _Param(0.0, 1.0, low_open=True),
        "max_scale": _Param(0.0, 1.0, default=1.0, low_open=True),
        "min_visibility": _VISIBILITY,
    },
    "color_jitter": {"brightness": _JITTER, "contrast": _JITTER, "saturation": _JITTER},
}
"""Every op and its parameters besides ``p`` (all ops need ``p``, a probability in [0, 1])."""


@dataclass(frozen=True)
class AugmentOp:
    """One validated op: its name, its probability and its parameters (defaults filled in)."""

    name: str
    p: float
    params: dict


def _parse_op(where: str, item: object) -> tuple[AugmentOp | None, list[str]]:
    allowed_ops = ", ".join(AUGMENT_OPS)
    if not isinstance(item, dict) or not isinstance(item.get("op"), str):
        return None, [f"{where}: must be a mapping with a string `op`, e.g. {{op: hflip, p: 0.5}}; got {item!r}"]
    name = item["op"]
    if name not in AUGMENT_OPS:
        return None, [f"{where}: unknown op {name!r}; allowed: {allowed_ops}"]
    spec = {"p": _P, **AUGMENT_OPS[name]}
    errors: list[str] = []
    unknown = [key for key in item if key not in spec and key != "op"]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        errors.append(f"{where}: unknown parameter(s) {names} for op {name!r}; allowed: {', '.join(spec)}")
    values: dict[str, float] = {}
    for key, param in spec.items():
        if key not in item:
            if param.default is None:
                errors.append(f"{where}: op {name!r} needs {key} in {param.range_text()}")
            else:
                values[key] = param.default
            continue
        value = item[key]
        if not is_finite_number(value):
            errors.append(f"{where}: {key}={value!r} for op {name!r} must be a number in {param.range_text()}")
            continue
        if not param.contains(value):
            errors.append(f"{where}: {key}={value!r} for op {name!r} is outside {param.range_text()}")
            continue
        values[key] = float(value)
    if name == "scale_crop" and {"min_scale", "max_scale"} <= values.keys():
        if values["min_scale"] > values["max_scale"]:
            errors.append(
                f"{where}: min_scale={values['min_scale']:g} > max_scale={values['max_scale']:g} for op "
                f"'scale_crop'; need min_scale <= max_scale"
            )
    if errors:
        return None, errors
    p = values.pop("p")
    return AugmentOp(name=name, p=p, params=values), []


def parse_augment_ops(spec: list, *, where: str = "custom.augment") -> list[AugmentOp]:
    """Validate the YAML op list and return one :class:`AugmentOp` per entry, in order.

    Each entry is a mapping ``{op: NAME, p: PROB, ...params}`` (see :data:`AUGMENT_OPS` for the
    parameters, their ranges and defaults). Raises ``ValueError`` listing every problem, one per
    line, each naming ``where[index]``, the op or parameter, its value and what is allowed.
    An empty list is valid (no augmentation).
    """
    if not isinstance(spec, list):
        raise ValueError(f"{where}: must be a list of ops like [{{op: hflip, p: 0.5}}], got {spec!r}")
    ops: list[AugmentOp] = []
    errors: list[str] = []
    for index, item in enumerate(spec):
        op, found = _parse_op(f"{where}[{index}]", item)
        errors.extend(found)
        if op is not None:
            ops.append(op)
    if errors:
        raise ValueError("\n".join(errors))
    return ops


# ---------------------------------------------------------------------------- geometry state


@dataclass(frozen=True, slots=True)
class _Geometry:
    """The objects' coordinates as arrays, one per (kind, value count), with their indices into
    ``record.objects``. What each kind does under a transform and a clip is its own (`src/datasets/kinds/`)."""

    groups: tuple[tuple[str, np.ndarray, np.ndarray], ...]  # (kind key, rows (N, 2k), ids (N,))

    @classmethod
    def of(cls, record: Record) -> _Geometry:
        by_group: dict[tuple[str, int], list[int]] = {}
        for i, obj in enumerate(record.objects):
            by_group.setdefault((obj.kind, len(obj.points)), []).append(i)
        groups = []
        for (key, size), ids in by_group.items():
            rows = np.array([record.objects[i].points for i in ids], dtype=np.float64).reshape(-1, size)
            # canonical from the start: a record made in code (not read from a file) comes out canonical too
            groups.append((key, geometry_kinds.get(key).canonical(rows), np.array(ids, dtype=np.int64)))
        return cls(tuple(groups))

    def mapped(self, transform: Callable[[np.ndarray], np.ndarray]) -> _Geometry:
        return _Geometry(tuple((key, geometry_kinds.get(key).transform(rows, transform), ids)
                               for key, rows, ids in self.groups))

    def objects(self, record: Record) -> tuple[GroundingObject, ...]:
        points = {int(i): row for _, rows, ids in self.groups for i, row in zip(ids, rows, strict=True)}
        return tuple(
            # +0.0 turns -0.0 into 0.0
            dataclasses.replace(record.objects[i], points=tuple(float(v) + 0.0 for v in points[i]))
            for i in sorted(points)
        )


def _clip_to_image(geom: _Geometry, width: int, height: int, min_visibility: float) -> tuple[_Geometry, Counter]:
    """Drop objects less than ``min_visibility`` visible (or not at all), clip the rest (each kind's `clip`)."""
    dropped: Counter = Counter()
    groups = []
    for key, rows, ids in geom.groups:
        kept, keep, invalid = geometry_kinds.get(key).clip(rows, width, height, min_visibility)
        dropped[DROP_LOW_VISIBILITY] += int(np.count_nonzero(~keep & ~invalid))
        dropped[DROP_INVALID_AFTER_CLIP] += int(np.count_nonzero(invalid))
        groups.append((key, kept, ids[keep]))
    return _Geometry(tuple(groups)), +dropped


# ---------------------------------------------------------------------------- ops

# Each op: (image, geometry, params, rng) -> (image, geometry, drawn values for the report,
# drops by reason). Random values are drawn only once the op is known to apply.
_OpResult = tuple[Image.Image, _Geometry, dict[str, Any], Counter]


def _hflip(image: Image.Image, geom: _Geometry, params: dict, rng: np.random.Generator) -> _OpResult:
    out = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out, geom.mapped(lambda pts: hflip_points(pts, image.width)), {}, Counter()


def _vflip(image: Image.Image, geom: _Geometry, params: dict, rng: np.random.Generator) -> _OpResult:
    out = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return out, geom.mapped(lambda pts: vflip_points(pts, image.height)), {}, Counter()


_ROT90 = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


def _rot90(image: Image.Image, geom: _Geometry, params: dict, rng: np.random.Generator) -> _OpResult:
    k = int(rng.integers(1, 4))
    out = image.transpose(_ROT90[k])
    moved = geom.mapped(lambda pts: rot90_points(pts, image.width, image.height, k)[0])
    return out, moved, {"k": k}, Counter()


def _rotate(image: Image.Image, geom: _Geometry, params: dict, rng: np.random.Generator) -> _OpResult:
    limit = params["max_degrees"]
    angle = float(rng.uniform(-limit, limit))
    out = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=FILL_RGB)
    moved = geom.mapped(lambda pts: rotate_points(pts, image.width, image.height, angle, expand=True)[0])
    # With expand=True nothing leaves the canvas, but clipping also absorbs float error.
    clipped, dropped = _clip_to_image(moved, out.width, out.height, params["min_visibility"])
    return out, clipped, {"angle": angle}, dropped


def _scale_crop(image: Image.Image, geom: _Geometry, params: dict, rng: np.random.Generator) -> _OpResult:
    width, height = image.size
    scale = float(rng.uniform(params["min_scale"], params["max_scale"]))
    crop_w, crop_h = scale * width, scale * height
    x0, y0 = float(rng.uniform(0.0, width - crop_w)), float(rng.uniform(0.0, height - crop_h))
    # resize(box=...) crops and resizes in one resampling pass; PIL maps the (float) window's
    # edges onto the output's edges, exactly as crop_points + resize_points do.
    window = (x0, y0, x0 + crop_w, y0 + crop_h)
    out = image.resize((width, height), resample=Image.Resampling.BILINEAR, box=window)
    moved = geom.mapped(lambda pts: resize_points(crop_points(pts, x0, y0), (crop_w, crop_h), (width, height)))
    # Visibility is a ratio of areas, unchanged by the resize, so clip in output pixels.
    clipped, dropped = _clip_to_image(moved, width, height, params["min_visibility"])
    return out, clipped, {"scale": scale, "window": [round(v, 3) for v in window]}, dropped


def _color_jitter(image: Image.Image, geom: _Geometry, params: dict, rng: np.random.Generator) -> _OpResult:
    factors: dict[str, Any] = {}
    out = image
    for key, enhancer in (
        ("brightness", ImageEnhance.Brightness),
        ("contrast", ImageEnhance.Contrast),
        ("saturation", ImageEnhance.Color),
    ):
        amount = params[key]
        if amount > 0:
            factors[key] = float(rng.uniform(1.0 - amount, 1.0 + amount))
            out = enhancer(out).enhance(factors[key])
    return out, geom, factors, Counter()


_APPLY: dict[str, Callable[[Image.Image, _Geometry, dict, np.random.Generator], _OpResult]] = {
    "hflip": _hflip,
    "vflip": _vflip,
    "rot90": _rot90,
    "rotate": _rotate,
    "scale_crop": _scale_crop,
    "color_jitter": _color_jitter,
}
assert _APPLY.keys() == AUGMENT_OPS.keys()


# ---------------------------------------------------------------------------- entry


def augment(
    image: Image.Image, record: Record, ops: list[AugmentOp], rng: np.random.Generator
) -> tuple[Image.Image, Record, dict]:
    """Apply ``ops`` in order, each with probability ``op.p``, to ``image`` and ``record``.

    ``image`` must be the record's image as loaded by :func:`~src.datasets.images.load_image`
    (its size must equal ``record.width, record.height``, else ``ValueError``). Returns a new
    image, a new :class:`Record` (same ``image`` path, ``source``, ``summary``; ``width`` /
    ``height`` equal to the new image's size; transformed objects in their original order minus
    dropped ones, every one inside the image and valid under the contract; ignore regions move like
    any object) and a report::

        {"applied": [{"op": "rotate", "angle": -3.2}, ...], "dropped": 1,
         "dropped_by_reason": {"low_visibility": 1}}

    A draw that would leave only ignore regions of a record that had other objects is undone: the
    record and a copy of the image come back unchanged, the report saying ``"reverted"``.

    Inputs are never mutated. The result depends only on the inputs and the state of ``rng``:
    one uniform draw decides each op, then the op draws its own values only if it applies.
    """
    if image.size != (record.width, record.height):
        raise ValueError(
            f"{record.image}: record says {record.width}x{record.height} but the image is "
            f"{image.width}x{image.height}; pass the image from load_image(record.image)"
        )
    out = image.copy()  # never hand back the caller's object, even when nothing applies
    if out.mode != "RGB":
        out = out.convert("RGB")  # fillcolor and ImageEnhance.Color assume RGB
    geom = _Geometry.of(record)
    applied: list[dict[str, Any]] = []
    dropped: Counter = Counter()
    for op in ops:
        if not rng.random() < op.p:
            continue
        out, geom, drawn, lost = _APPLY[op.name](out, geom, op.params, rng)
        applied.append({"op": op.name, **drawn})
        dropped.update(lost)
    new_record = dataclasses.replace(record, width=out.width, height=out.height, objects=geom.objects(record))
    if (new_record.objects and all(o.ignore for o in new_record.objects)
            and not all(o.ignore for o in record.objects)):
        # Only ignore regions left: the answer would be [], denying what they hold (a record like that is
        # not trained, src/datasets/plan.py), so this draw keeps the record as it was.
        original = image.copy() if image.mode == "RGB" else image.convert("RGB")
        return original, record, {"applied": [], "dropped": 0, "dropped_by_reason": {},
                                  "reverted": "only ignore regions were left"}
    report = {"applied": applied, "dropped": sum(dropped.values()), "dropped_by_reason": dict(dropped)}
    return out, new_record, report
