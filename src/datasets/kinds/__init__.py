"""The geometry-kind registry: every kind of object geometry (box, quad, point, polygon), one module each.

Each module of this package (``box.py``, ``quad.py``, ``point.py``, ``polygon.py``) defines a
`GeometryKind` subclass (see `base.py`: its JSON key, value count, validity rules, clamping, stored vertex
order, grid conversion, bounds, area, augmentation, drawing, answer values) and exposes one instance as
``KIND``; the modules are found here by listing the package, so adding a kind is adding one module (and its
tests). The contract, validation, columns, answers, augmentation, pictures, metrics and converters ask this
registry and never spell a kind's key.

Matching between two objects of any kinds is `similarity` / `pairwise_similarity` (IoU for two regions, the
point rules of `point.py` when a point is involved).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence

import numpy as np

from src.datasets import geometry
from src.datasets.kinds.base import GeometryKind
from src.datasets.kinds.point import POINT_RADIUS

__all__ = ["KINDS", "KEYS", "POINT_RADIUS", "SIMILARITY_MODES", "GeometryKind", "by_index", "get", "index_of",
           "keys_text", "pairwise_similarity", "similarity"]


def _discover() -> dict[str, GeometryKind]:
    found: list[GeometryKind] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        kind = getattr(importlib.import_module(f"{__name__}.{info.name}"), "KIND", None)
        if isinstance(kind, GeometryKind):
            found.append(kind)
    found.sort(key=lambda k: k.order)
    orders = [k.order for k in found]
    keys = [k.key for k in found]
    if orders != list(range(len(found))) or len(set(keys)) != len(keys):
        raise RuntimeError(f"geometry kinds need distinct keys and orders 0..n-1, got "
                           f"{dict(zip(keys, orders, strict=True))}")
    return {k.key: k for k in found}


KINDS: dict[str, GeometryKind] = _discover()
"""Every kind by its key, in `order` (the index record tables store)."""
KEYS: tuple[str, ...] = tuple(KINDS)
"""The kinds' JSON keys in order: box, quad, point, polygon (each module's ``key``)."""
_BY_INDEX = tuple(KINDS.values())


def get(key: str) -> GeometryKind:
    """The kind whose JSON key is `key`; KeyError naming the known keys otherwise."""
    try:
        return KINDS[key]
    except KeyError:
        raise KeyError(f"unknown geometry kind {key!r}; known: {', '.join(KEYS)}") from None


def index_of(key: str) -> int:
    """The stored index of the kind `key`."""
    return get(key).order


def by_index(index: int) -> GeometryKind:
    """The kind stored as `index`."""
    return _BY_INDEX[index]


def keys_text(joiner: str = "or") -> str:
    """The keys for a message, in order: ``"k1, k2, k3 or k4"``."""
    return f"{', '.join(KEYS[:-1])} {joiner} {KEYS[-1]}" if len(KEYS) > 1 else KEYS[0]


# ---------------------------------------------------------------------------- similarity

SIMILARITY_MODES = ("auto", "bbox", "polygon")
"""How two regions are compared: ``auto`` box IoU for two axis-aligned kinds (two boxes), polygon IoU when
another region kind is involved; ``bbox`` every region as its bounding box; ``polygon`` every region as a
polygon. Points follow the
point rules in every mode."""


def _box_iou(a: np.ndarray, b: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    # pycocotools' bbIou in xyxy form: an overlap <= 0 on either axis is IoU 0; a crowd column's union is
    # the detection's area.
    def area(boxes: np.ndarray) -> np.ndarray:
        return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)

    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.broadcast_to(area(a)[:, None], inter.shape)
    union = np.where(crowd[None, :], area_a, area_a + area(b)[None, :] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _shapes(kinds: Sequence[str], values: Sequence[Sequence[float]], as_box: bool):  # noqa: ANN202
    import shapely

    out = np.empty(len(kinds), dtype=object)
    for key in set(kinds):
        idx = [i for i, k in enumerate(kinds) if k == key]
        kind = KINDS[key]
        if as_box and kind.region:
            rows = geometry.xyxy_to_quad8(kind.xyxy(_rows(values, idx)))
            out[idx] = shapely.polygons(rows.reshape(-1, 4, 2))
        else:
            by_count: dict[int, list[int]] = {}
            for i in idx:
                by_count.setdefault(len(values[i]), []).append(i)
            for group in by_count.values():
                out[group] = kind.shapes(_rows(values, group))
    return out


def _xyxy(kinds: Sequence[str], values: Sequence[Sequence[float]]) -> np.ndarray:
    out = np.zeros((len(kinds), 4))
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (key, v) in enumerate(zip(kinds, values, strict=True)):
        groups.setdefault((key, len(v)), []).append(i)
    for (key, _), idx in groups.items():
        out[idx] = KINDS[key].xyxy(_rows(values, idx))
    return out


def _rows(values: Sequence[Sequence[float]], idx: Sequence[int]) -> np.ndarray:
    return np.array([values[i] for i in idx], dtype=np.float64).reshape(len(idx), -1)


def _region_iou(kinds_a, values_a, kinds_b, values_b, crowd: np.ndarray, mode: str) -> np.ndarray:
    """IoU of region objects only."""
    import shapely

    n, m = len(kinds_a), len(kinds_b)
    if not n or not m:
        return np.zeros((n, m))
    if mode == "bbox":
        return _box_iou(_xyxy(kinds_a, values_a), _xyxy(kinds_b, values_b), crowd)
    if mode == "auto":
        ious = _box_iou(_xyxy(kinds_a, values_a), _xyxy(kinds_b, values_b), crowd)
        box_a = np.array([KINDS[k].axis_aligned for k in kinds_a])
        box_b = np.array([KINDS[k].axis_aligned for k in kinds_b])
        mixed = ~box_a[:, None] | ~box_b[None, :]
        if mixed.any():
            rows, cols = np.flatnonzero(mixed.any(1)), np.flatnonzero(mixed.any(0))
            poly = _region_iou([kinds_a[i] for i in rows], [values_a[i] for i in rows],
                               [kinds_b[j] for j in cols], [values_b[j] for j in cols], crowd[cols], "polygon")
            sub = mixed[np.ix_(rows, cols)]
            block = ious[np.ix_(rows, cols)]
            block[sub] = poly[sub]
            ious[np.ix_(rows, cols)] = block
        return ious
    # Only pairs whose bounds overlap can share area (a shape, repaired or not, lies within its vertices'
    # bounds); every other pair is IoU 0 whatever its union, so its shapes are never built (a `make_valid`
    # repair can cost seconds) nor clipped.
    box_a, box_b = _xyxy(kinds_a, values_a), _xyxy(kinds_b, values_b)
    overlap = ((np.maximum(box_a[:, None, 0], box_b[None, :, 0]) < np.minimum(box_a[:, None, 2], box_b[None, :, 2]))
               & (np.maximum(box_a[:, None, 1], box_b[None, :, 1]) < np.minimum(box_a[:, None, 3], box_b[None, :, 3])))
    ious = np.zeros((n, m))
    rows, cols = np.flatnonzero(overlap.any(1)), np.flatnonzero(overlap.any(0))
    if not len(rows):
        return ious
    a = _shapes([kinds_a[i] for i in rows], [values_a[i] for i in rows], False)
    b = _shapes([kinds_b[j] for j in cols], [values_b[j] for j in cols], False)
    pa, pb = np.nonzero(overlap[np.ix_(rows, cols)])
    inter = shapely.area(shapely.intersection(a[pa], b[pb]))
    area_a = shapely.area(a)[pa]
    union = np.where(crowd[cols][pb], area_a, area_a + shapely.area(b)[pb] - inter)
    ious[rows[pa], cols[pb]] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return ious


def pairwise_similarity(kinds_a: Sequence[str], values_a: Sequence[Sequence[float]], kinds_b: Sequence[str],
                        values_b: Sequence[Sequence[float]], *, size: tuple[float, float] | None = None,
                        crowd: Sequence[bool] | None = None, mode: str = "auto") -> np.ndarray:
    """Similarity ``(len(a), len(b))`` between objects ``a`` (predictions) and ``b`` (ground truth), in [0, 1].

    Two regions: IoU as `mode` says (`SIMILARITY_MODES`); against a `crowd` column of ``b`` (an ignore region)
    the union is ``a``'s own area (COCO's crowd rule). A point and a region (either side): 1 when the point lies
    in the region, its edge included, else 0. Two points: ``max(0, 1 - d / POINT_RADIUS)`` with ``d`` the
    distance in image sizes, ``hypot(dx / width, dy / height)`` for `size` = ``(width, height)`` of the space
    the values are in (the image's pixels, or ``(1000, 1000)`` on the norm1000 grid); a point pair without a
    `size` is a ValueError.
    """
    if mode not in SIMILARITY_MODES:
        raise ValueError(f"mode must be one of {SIMILARITY_MODES}, got {mode!r}")
    n, m = len(kinds_a), len(kinds_b)
    if not n or not m:
        return np.zeros((n, m))
    crowd_flags = np.zeros(m, dtype=bool) if crowd is None else np.asarray(crowd, dtype=bool).reshape(m)
    # Equal objects have equal similarities: each distinct one is compared once (a degenerate generation
    # repeats one entry hundreds of times, and polygon IoU costs a clipping per pair).
    first_a, inverse_a = _distinct(kinds_a, values_a)
    first_b, inverse_b = _distinct(kinds_b, values_b, crowd_flags)
    if len(first_a) < n or len(first_b) < m:
        distinct = _similarity([kinds_a[i] for i in first_a], [values_a[i] for i in first_a],
                               [kinds_b[j] for j in first_b], [values_b[j] for j in first_b], size,
                               crowd_flags[first_b], mode)
        return distinct[np.ix_(inverse_a, inverse_b)]
    return _similarity(kinds_a, values_a, kinds_b, values_b, size, crowd_flags, mode)


def _distinct(kinds: Sequence[str], values: Sequence[Sequence[float]],
              flags: np.ndarray | None = None) -> tuple[list[int], np.ndarray]:
    """(the index of each distinct object's first occurrence, each object's position among them)."""
    seen: dict[tuple, int] = {}
    first: list[int] = []
    inverse = np.empty(len(kinds), dtype=np.int64)
    marks = [False] * len(kinds) if flags is None else flags.tolist()
    for i, key in enumerate(zip(kinds, map(tuple, values), marks, strict=True)):
        at = seen.get(key)
        if at is None:
            at = seen[key] = len(first)
            first.append(i)
        inverse[i] = at
    return first, inverse


def _similarity(kinds_a: Sequence[str], values_a: Sequence[Sequence[float]], kinds_b: Sequence[str],
                values_b: Sequence[Sequence[float]], size: tuple[float, float] | None, crowd_flags: np.ndarray,
                mode: str) -> np.ndarray:
    """`pairwise_similarity` of non-empty sides, `crowd_flags` one bool per ``b``."""
    n, m = len(kinds_a), len(kinds_b)
    out = np.zeros((n, m))
    point_a = np.array([not get(k).region for k in kinds_a])
    point_b = np.array([not get(k).region for k in kinds_b])
    ra, rb = np.flatnonzero(~point_a), np.flatnonzero(~point_b)
    if len(ra) and len(rb):
        out[np.ix_(ra, rb)] = _region_iou([kinds_a[i] for i in ra], [values_a[i] for i in ra],
                                          [kinds_b[j] for j in rb], [values_b[j] for j in rb], crowd_flags[rb], mode)
    pa, pb = np.flatnonzero(point_a), np.flatnonzero(point_b)
    if len(pa) and len(pb):
        if size is None:
            raise ValueError("comparing two points needs the size of their space (width, height)")
        width, height = (float(v) for v in size)
        xa, xb = _rows(values_a, pa), _rows(values_b, pb)
        d = np.hypot((xa[:, None, 0] - xb[None, :, 0]) / width, (xa[:, None, 1] - xb[None, :, 1]) / height)
        out[np.ix_(pa, pb)] = np.clip(1.0 - d / POINT_RADIUS, 0.0, None)
    for points, regions, points_first in ((pa, rb, True), (pb, ra, False)):
        if len(points) and len(regions):
            import shapely

            pts = shapely.points(_rows(values_a if points_first else values_b, points))
            regs = _shapes([(kinds_b if points_first else kinds_a)[i] for i in regions],
                           [(values_b if points_first else values_a)[i] for i in regions], mode == "bbox")
            inside = shapely.covers(regs[None, :], pts[:, None]).astype(np.float64)
            if points_first:
                out[np.ix_(points, regions)] = inside
            else:
                out[np.ix_(regions, points)] = inside.T
    return out


def similarity(kind_a: str, values_a: Sequence[float], kind_b: str, values_b: Sequence[float], *,
               size: tuple[float, float] | None = None, crowd: bool = False, mode: str = "auto") -> float:
    """`pairwise_similarity` of one object ``a`` against one object ``b``."""
    return float(pairwise_similarity([kind_a], [values_a], [kind_b], [values_b], size=size, crowd=[crowd],
                                     mode=mode)[0, 0])
