"""Pure numpy geometry for grounding annotations.

Conventions used by every function here:

* Pixel coordinates are continuous: pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``, the
  origin is the top-left corner of the image, x grows right and y grows down. A box
  ``xyxy = [x1, y1, x2, y2]`` therefore has exclusive right/bottom edges, exactly like
  ``PIL.Image.Image.getbbox()``, and an image of size ``(width, height)`` spans
  ``[0, width] x [0, height]``.
* Points arrays have shape ``(..., 2k)``: interleaved ``x, y`` pairs in the last axis. Boxes
  ``(N, 4)`` and quads ``(N, 8)`` are points arrays, so every point transform works on them.
* ``quad8`` is ``[x1, y1, x2, y2, x3, y3, x4, y4]``; :func:`canonical_quad8` defines the vertex
  order we store.
* Sizes are always ``(width, height)``; the axis order is in the parameter names.
* ``norm1000`` / ``norm100`` are integers on a 0..1000 / 0..100 grid relative to the image size
  (what Qwen3-VL reads and writes); ``none`` means integer pixels.

Every function validates its inputs, never mutates them and returns new arrays.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

NormMode = Literal["none", "norm100", "norm1000"]
NORM_MODES: tuple[str, ...] = ("none", "norm100", "norm1000")
_NORM_SCALE = {"norm100": 100.0, "norm1000": 1000.0}

# Quads whose |area| is below this (in px^2) count as degenerate.
_AREA_EPS = 1e-6

__all__ = [
    "NORM_MODES",
    "NormMode",
    "box_iou_xyxy",
    "POLYGON_PROBLEMS",
    "QUAD_PROBLEMS",
    "canonical_polygon",
    "canonical_quad8",
    "clamp_near",
    "clamp_points",
    "crop_points",
    "hflip_points",
    "json_number",
    "norm_to_pixel",
    "pixel_to_norm",
    "points_xyxy",
    "polygon_area",
    "polygon_problem_codes",
    "quad8_to_xyxy",
    "quad_is_valid",
    "quads_are_valid",
    "resize_points",
    "rot90_points",
    "rotate_points",
    "rotated_size_wh",
    "scale_points",
    "vflip_points",
    "xyxy_to_quad8",
]


# ---------------------------------------------------------------------------- validation


def is_finite_number(value: object) -> bool:
    """True for an int or float (not a bool) that is finite: a usable coordinate or score."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def json_number(value: float) -> int | float:
    """A coordinate as written to JSON: an int when it is integral (``3.0`` -> ``3``), else the float."""
    return int(value) if float(value).is_integer() else float(value)


def _as_points(points: object, name: str = "points") -> np.ndarray:
    arr = np.array(points, dtype=np.float64)  # np.array copies: callers' arrays stay untouched
    if arr.ndim == 0 or arr.shape[-1] == 0 or arr.shape[-1] % 2:
        raise ValueError(f"{name} must have shape (..., 2k) of interleaved x, y values, got {arr.shape}")
    return arr


def _as_rows(values: object, name: str, cols: int) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != cols:
        raise ValueError(f"{name} must have shape (N, {cols}), got {arr.shape}")
    return arr


def _check_size(width: float, height: float, what: str = "width, height") -> None:
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise ValueError(f"{what} must be positive and finite, got ({width}, {height})")


def _check_norm(norm: str) -> None:
    if norm not in NORM_MODES:
        raise ValueError(f"norm must be one of {list(NORM_MODES)}, got {norm!r}")


def _round_half_even(values: np.ndarray) -> np.ndarray:
    # Python's round() and numpy's rint agree (halves to the even neighbour): the rule ms-swift's
    # Template.normalize_bbox applies with int(round(x / width * 1000)), so answers written here and boxes
    # ms-swift normalises itself land on the same grid value, ties included.
    return np.rint(values)


# ---------------------------------------------------------------------------- coordinate spaces


def pixel_to_norm(points_xy: object, width: float, height: float, norm: NormMode) -> np.ndarray:
    """Convert pixel points ``(..., 2k)`` to integer grid values of the same shape.

    The rounding rule, computed here only: ``round(x / width * 1000)`` in float64, divided first,
    with Python's ``round`` (a tie goes to the even integer), clamped to 0..1000: ms-swift's
    ``Template.normalize_bbox`` rule (to the bit, ties included); y uses ``height``. ``norm100`` is
    the same on a 0..100 grid; ``none`` is ``round(x)`` clamped to ``[0, floor(width)]`` /
    ``[0, floor(height)]``. Returns ``int64``.

    >>> pixel_to_norm([[10.0, 20.0, 30.0, 40.0]], 200, 100, "norm1000").tolist()
    [[50, 200, 150, 400]]
    """
    pts = _as_points(points_xy, "points_xy")
    _check_size(width, height)
    _check_norm(norm)
    limit = np.empty(pts.shape[-1])
    if norm == "none":
        limit[0::2], limit[1::2] = width, height
        scaled = pts
    else:
        scale = _NORM_SCALE[norm]
        limit[:] = scale
        scaled = pts.copy()
        # x / width * scale, not x * (scale / width): the two differ in the last bit for some x, and a
        # value landing on .5 then rounds the other way than ms-swift's.
        scaled[..., 0::2] = scaled[..., 0::2] / width * scale
        scaled[..., 1::2] = scaled[..., 1::2] / height * scale
    # floor(limit) because a non-integer pixel width still allows only integer pixels below it.
    return np.clip(_round_half_even(scaled), 0, np.floor(limit)).astype(np.int64)


def norm_to_pixel(values: object, width: float, height: float, norm: NormMode) -> np.ndarray:
    """Convert grid values ``(..., 2k)`` from :func:`pixel_to_norm` back to float pixels.

    ``norm1000``: ``x = v / 1000 * width``; ``norm100`` likewise; ``none`` returns the values as
    floats. No clamping: out-of-grid values map outside the image.

    >>> norm_to_pixel([[50, 200, 150, 400]], 200, 100, "norm1000").tolist()
    [[10.0, 20.0, 30.0, 40.0]]
    """
    pts = _as_points(values, "values")
    _check_size(width, height)
    _check_norm(norm)
    if norm == "none":
        return pts
    scale = _NORM_SCALE[norm]
    pts[..., 0::2] *= width / scale
    pts[..., 1::2] *= height / scale
    return pts


def clamp_points(points_xy: object, width: float, height: float) -> np.ndarray:
    """Clip points ``(..., 2k)`` into the image: x to ``[0, width]``, y to ``[0, height]``."""
    pts = _as_points(points_xy, "points_xy")
    _check_size(width, height)
    pts[..., 0::2] = np.clip(pts[..., 0::2], 0.0, width)
    pts[..., 1::2] = np.clip(pts[..., 1::2], 0.0, height)
    return pts


def clamp_near(points_xy: object, width: float, height: float, tolerance: float) -> tuple[np.ndarray, int, bool]:
    """Clip points ``(..., 2k)`` into the image (:func:`clamp_points`) and say what that did: ``(clipped, how many
    values moved, whether any moved by more than `tolerance`)``. The contract's and the converters' one clamping
    rule: a value up to `tolerance` outside the image is clamped and counted, further out the object is refused."""
    pts = _as_points(points_xy, "points_xy")
    clipped = clamp_points(pts, width, height)
    moved = np.abs(clipped - pts)
    return clipped, int(np.count_nonzero(moved)), bool(np.any(moved > tolerance))


# ---------------------------------------------------------------------------- boxes and quads


def xyxy_to_quad8(xyxy: object) -> np.ndarray:
    """Boxes ``(N, 4)`` ``[x1, y1, x2, y2]`` -> quads ``(N, 8)``.

    Vertices are top-left, top-right, bottom-right, bottom-left: clockwise on screen, which is
    the :func:`canonical_quad8` order.

    >>> xyxy_to_quad8([[1, 2, 3, 4]]).tolist()
    [[1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 1.0, 4.0]]
    """
    boxes = _as_rows(xyxy, "xyxy", 4)
    x1, y1, x2, y2 = boxes.T
    return np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=1)


def quad8_to_xyxy(quad8: object) -> np.ndarray:
    """Quads ``(N, 8)`` -> their axis-aligned bounding boxes ``(N, 4)`` ``[x1, y1, x2, y2]``."""
    quads = _as_rows(quad8, "quad8", 8)
    xs, ys = quads[:, 0::2], quads[:, 1::2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)


def _signed_area(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    # Shoelace over the last axis. With y pointing down, a positive value means clockwise
    # as seen on screen.
    return 0.5 * np.sum(xs * np.roll(ys, -1, axis=-1) - np.roll(xs, -1, axis=-1) * ys, axis=-1)


def polygon_area(polygon: object) -> np.ndarray | float:
    """Absolute area (px^2) of polygons ``(..., 2k)`` with ``k >= 3`` vertices.

    Returns an array of shape ``polygon.shape[:-1]``, or a float for a single ``(2k,)`` polygon.
    Self-crossing polygons give the shoelace value (lobes of opposite turn cancel).
    """
    pts = _as_points(polygon, "polygon")
    if pts.shape[-1] < 6:
        raise ValueError(f"polygon needs at least 3 vertices (6 values), got {pts.shape}")
    area = np.abs(_signed_area(pts[..., 0::2], pts[..., 1::2]))
    return float(area) if area.ndim == 0 else area


def canonical_polygon(polygons: object) -> np.ndarray:
    """Reorder the vertices of polygons ``(N, 2k)`` (``k >= 3``) into our canonical order.

    Canonical order: clockwise as seen on screen (y down, i.e. positive shoelace area),
    starting from the top-left-most vertex, the one with the smallest ``x + y`` (ties: smallest
    ``y``, then the first in clockwise order). The result does not depend on which vertex the input
    started from or on its direction, so equal shapes compare equal. Only meaningful for valid
    polygons (see :func:`polygon_problem_codes`); degenerate ones keep their direction.
    """
    rows = np.array(polygons, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 6 or rows.shape[1] % 2:
        raise ValueError(f"polygons must have shape (N, 2k) with k >= 3, got {rows.shape}")
    k = rows.shape[1] // 2
    pts = rows.reshape(-1, k, 2)
    ccw = _signed_area(pts[..., 0], pts[..., 1]) < 0
    pts[ccw] = pts[ccw][:, ::-1]
    key = pts[..., 0] + pts[..., 1]
    tied = key == key.min(axis=1, keepdims=True)
    start = np.argmin(np.where(tied, pts[..., 1], np.inf), axis=1)
    order = (start[:, None] + np.arange(k)) % k
    return np.take_along_axis(pts, order[..., None], axis=1).reshape(-1, 2 * k)


def canonical_quad8(quad8: object) -> np.ndarray:
    """Reorder the vertices of quads ``(N, 8)`` into our canonical order.

    Canonical order: clockwise as seen on screen (y down, i.e. positive shoelace area),
    starting from the top-left-most vertex, the one with the smallest ``x + y`` (ties: smallest
    ``y``). The result does not depend on which vertex the input started from or on its
    direction, so equal shapes compare equal. Only meaningful for valid quads (see
    :func:`quad_is_valid`); degenerate ones keep their direction. (:func:`canonical_polygon` for 4 vertices.)
    """
    return canonical_polygon(_as_rows(quad8, "quad8", 8))


def points_xyxy(points: object) -> np.ndarray:
    """Rows of points ``(N, 2k)`` (a box's two corners, a quad's or polygon's vertices, a point) -> their
    axis-aligned bounding boxes ``(N, 4)`` ``[x1, y1, x2, y2]``."""
    rows = np.array(points, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] == 0 or rows.shape[1] % 2:
        raise ValueError(f"points must have shape (N, 2k), got {rows.shape}")
    xs, ys = rows[:, 0::2], rows[:, 1::2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1).reshape(-1, 4)


# Why a polygon is unusable, by code (polygon_problem_codes): 0 means nothing is wrong.
POLYGON_OK, POLYGON_NON_FINITE, POLYGON_REPEATED, POLYGON_CROSSING, POLYGON_ZERO_AREA = 0, 1, 2, 3, 4
POLYGON_PROBLEMS: tuple[str | None, ...] = (None, "non-finite coordinates", "repeated vertices",
                                            "self-crossing edges", "zero area")
_PAIR_BUDGET = 2_000_000  # polygons x vertex pairs handled in one numpy step (bounds the memory of a chunk)


def polygon_problem_codes(polygons: object) -> np.ndarray:
    """For polygons ``(N, 2k)`` (``k >= 3``), an int ``(N,)``: what is wrong with each, 0 for nothing.

    Checked in this order (the first found is the code): 1 non-finite coordinates, 2 repeated vertices (any two
    equal), 3 self-crossing edges (two edges that are not neighbours cross properly: each one's ends strictly on
    both sides of the other), 4 zero area (``|shoelace| < 1e-6`` px^2). Concave but simple polygons are fine.
    For ``k = 4`` these are exactly the quad rules (:func:`quad_is_valid`, :func:`quads_are_valid`), with the
    same arithmetic; :data:`POLYGON_PROBLEMS` names each code.
    """
    rows = np.asarray(polygons, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 6 or rows.shape[1] % 2:
        raise ValueError(f"polygons must have shape (N, 2k) with k >= 3, got {rows.shape}")
    k = rows.shape[1] // 2
    codes = np.zeros(len(rows), dtype=np.int64)
    if not len(rows):
        return codes
    pts = rows.reshape(-1, k, 2)
    finite = np.all(np.isfinite(rows), axis=1)
    i, j = np.triu_indices(k, 1)
    # Edges e = (v_e, v_e+1); the pairs that are not neighbours (for k = 4: (0, 2) and (1, 3), the quad rule).
    ei, ej = np.triu_indices(k, 2)
    apart = ~((ei == 0) & (ej == k - 1))
    ei, ej = ei[apart], ej[apart]
    step = max(1, _PAIR_BUDGET // max(1, len(i) + len(ei)))
    repeated = np.zeros(len(rows), dtype=bool)
    crossing = np.zeros(len(rows), dtype=bool)

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])

    for start in range(0, len(rows), step):
        p = pts[start:start + step]
        repeated[start:start + step] = np.any(np.all(p[:, i] == p[:, j], axis=2), axis=1)
        p1, p2, q1, q2 = p[:, ei], p[:, (ei + 1) % k], p[:, ej], p[:, (ej + 1) % k]
        proper = (cross(q1, q2, p1) * cross(q1, q2, p2) < 0) & (cross(p1, p2, q1) * cross(p1, p2, q2) < 0)
        crossing[start:start + step] = np.any(proper, axis=1)
    zero = np.abs(_signed_area(pts[..., 0], pts[..., 1])) < _AREA_EPS
    for code, bad in ((POLYGON_ZERO_AREA, zero), (POLYGON_CROSSING, crossing), (POLYGON_REPEATED, repeated),
                      (POLYGON_NON_FINITE, ~finite)):
        codes[bad] = code  # the earliest check last, so it wins
    return codes


def quad_is_valid(quad8: object) -> str | None:
    """Why a single quad ``(8,)`` is unusable, or ``None`` when it is a proper quadrilateral.

    Reasons, checked in this order: ``"non-finite coordinates"``, ``"repeated vertices"``,
    ``"self-crossing edges (bow-tie)"``, ``"zero area"``. Concave but simple quads are valid.
    (:func:`polygon_problem_codes` on one 4-vertex polygon.)
    """
    quad = np.array(quad8, dtype=np.float64)
    if quad.shape != (8,):
        raise ValueError(f"quad8 must have shape (8,), got {quad.shape}")
    code = int(polygon_problem_codes(quad[None])[0])
    return None if code == POLYGON_OK else QUAD_PROBLEMS[code]


QUAD_PROBLEMS: tuple[str | None, ...] = (None, "non-finite coordinates", "repeated vertices",
                                         "self-crossing edges (bow-tie)", "zero area")
"""What :func:`quad_is_valid` says for each code of :func:`polygon_problem_codes`."""


def quads_are_valid(quad8: object) -> np.ndarray:
    """For quads ``(N, 8)``, a bool ``(N,)``: True where :func:`quad_is_valid` finds nothing wrong.

    The same tests with the same arithmetic, for many quads at once (validation checks a record's
    quads together); use :func:`quad_is_valid` to learn why one is not valid.
    """
    quads = np.asarray(quad8, dtype=np.float64).reshape(-1, 8)
    return polygon_problem_codes(quads) == POLYGON_OK


def box_iou_xyxy(boxes_a: object, boxes_b: object) -> np.ndarray:
    """Pairwise IoU of boxes ``(N, 4)`` and ``(M, 4)`` ``[x1, y1, x2, y2]`` -> ``(N, M)``.

    Inverted or zero-area boxes have area 0; a pair whose union is 0 gets IoU 0 (never NaN).
    """
    a = _as_rows(boxes_a, "boxes_a", 4)
    b = _as_rows(boxes_b, "boxes_b", 4)

    def area(boxes: np.ndarray) -> np.ndarray:
        return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)

    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# ---------------------------------------------------------------------------- transforms


def hflip_points(points: object, width: float) -> np.ndarray:
    """Mirror points ``(..., 2k)`` left-right like ``Image.transpose(FLIP_LEFT_RIGHT)``.

    ``x -> width - x``. Note a flip reverses turn direction: run quads through
    :func:`canonical_quad8` and boxes through quads and :func:`quad8_to_xyxy` afterwards.
    """
    pts = _as_points(points)
    _check_size(width, 1.0, "width")
    pts[..., 0::2] = width - pts[..., 0::2]
    return pts


def vflip_points(points: object, height: float) -> np.ndarray:
    """Mirror points ``(..., 2k)`` top-bottom like ``Image.transpose(FLIP_TOP_BOTTOM)``.

    ``y -> height - y``; the same caveat about vertex order as :func:`hflip_points` applies.
    """
    pts = _as_points(points)
    _check_size(1.0, height, "height")
    pts[..., 1::2] = height - pts[..., 1::2]
    return pts


def rot90_points(points: object, width: float, height: float, k: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Rotate points ``(..., 2k)`` by ``k * 90`` degrees counter-clockwise.

    Matches ``Image.transpose`` with ``ROTATE_90`` (k=1), ``ROTATE_180`` (k=2) and
    ``ROTATE_270`` (k=3) exactly; ``k`` is taken modulo 4. Returns ``(points, (new_width,
    new_height))``; the size is swapped for odd ``k``.
    """
    pts = _as_points(points)
    _check_size(width, height)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    xs, ys = pts[..., 0::2].copy(), pts[..., 1::2].copy()
    k = int(k) % 4
    if k == 0:
        return pts, (width, height)
    if k == 1:  # the top-right corner lands at the origin
        pts[..., 0::2], pts[..., 1::2] = ys, width - xs
        return pts, (height, width)
    if k == 2:
        pts[..., 0::2], pts[..., 1::2] = width - xs, height - ys
        return pts, (width, height)
    pts[..., 0::2], pts[..., 1::2] = height - ys, xs
    return pts, (height, width)


def _pil_rotate_matrix(width: float, height: float, angle_deg: float) -> list[float]:
    # PIL's inverse (destination -> source) rotation about the centre, built with the same
    # operations and the same 15-digit rounding as Image.rotate, so our sizes agree with its.
    angle = -math.radians(angle_deg % 360.0)
    matrix = [
        round(math.cos(angle), 15),
        round(math.sin(angle), 15),
        0.0,
        round(-math.sin(angle), 15),
        round(math.cos(angle), 15),
        0.0,
    ]
    cx, cy = width / 2, height / 2
    a, b, _, d, e, _ = matrix
    matrix[2] = a * -cx + b * -cy + cx
    matrix[5] = d * -cx + e * -cy + cy
    return matrix


def _is_fast_path(angle: float, width: float, height: float, expand: bool) -> bool:
    # Image.rotate shortcuts these angles to exact transposes.
    return angle in (0.0, 180.0) or (angle in (90.0, 270.0) and (expand or width == height))


def rotated_size_wh(width: int, height: int, angle_deg: float) -> tuple[int, int]:
    """The canvas size ``(width, height)`` of ``Image.rotate(angle_deg, expand=True)``.

    Computed exactly the way PIL computes it (including its rounding), so it always equals
    the size of the image PIL returns.
    """
    _check_size(width, height)
    angle = angle_deg % 360.0
    if _is_fast_path(angle, width, height, True):
        return (height, width) if angle in (90.0, 270.0) else (width, height)
    a, b, c, d, e, f = _pil_rotate_matrix(width, height, angle)
    xx = [a * x + b * y + c for x, y in ((0, 0), (width, 0), (width, height), (0, height))]
    yy = [d * x + e * y + f for x, y in ((0, 0), (width, 0), (width, height), (0, height))]
    return math.ceil(max(xx)) - math.floor(min(xx)), math.ceil(max(yy)) - math.floor(min(yy))


def rotate_points(
    points: object, width: int, height: int, angle_deg: float, expand: bool = True
) -> tuple[np.ndarray, tuple[int, int]]:
    """Rotate points ``(..., 2k)`` like ``Image.rotate(angle_deg, expand=expand)``.

    Counter-clockwise on screen about the image centre ``(width / 2, height / 2)``. With
    ``expand`` the canvas grows to PIL's expanded size (see :func:`rotated_size_wh`) and the
    centre moves to the new canvas centre; without it the size is unchanged and points may
    leave the image. Returns ``(points, (new_width, new_height))``; points are not clamped.
    """
    pts = _as_points(points)
    _check_size(width, height)
    angle = float(angle_deg) % 360.0
    if _is_fast_path(angle, width, height, expand):
        return rot90_points(pts, width, height, int(angle // 90))
    new_w, new_h = rotated_size_wh(width, height, angle) if expand else (width, height)
    # Invert PIL's destination -> source map: dst = R^-1 (src - c) + new centre, where
    # R = [[a, b], [d, e]] and c is the old centre.
    a, b, _, d, e, _ = _pil_rotate_matrix(width, height, angle)
    det = a * e - b * d
    xs, ys = pts[..., 0::2] - width / 2, pts[..., 1::2] - height / 2
    pts[..., 0::2] = (e * xs - b * ys) / det + new_w / 2
    pts[..., 1::2] = (-d * xs + a * ys) / det + new_h / 2
    return pts, (new_w, new_h)


def crop_points(points: object, x0: float, y0: float) -> np.ndarray:
    """Translate points ``(..., 2k)`` into a crop whose top-left corner is ``(x0, y0)``.

    Like ``Image.crop((x0, y0, ...))``; no clamping (use :func:`clamp_points` with the crop size).
    """
    pts = _as_points(points)
    pts[..., 0::2] -= x0
    pts[..., 1::2] -= y0
    return pts


def scale_points(points: object, sx: float, sy: float) -> np.ndarray:
    """Multiply x by ``sx`` and y by ``sy`` for points ``(..., 2k)``."""
    pts = _as_points(points)
    _check_size(sx, sy, "sx, sy")
    pts[..., 0::2] *= sx
    pts[..., 1::2] *= sy
    return pts


def resize_points(points: object, size_wh: tuple[float, float], new_size_wh: tuple[float, float]) -> np.ndarray:
    """Map points ``(..., 2k)`` from an image of ``size_wh`` to the same image resized to
    ``new_size_wh`` (like ``Image.resize(new_size_wh)``: edges map to edges)."""
    (w, h), (new_w, new_h) = size_wh, new_size_wh
    _check_size(w, h, "size_wh")
    _check_size(new_w, new_h, "new_size_wh")
    return scale_points(points, new_w / w, new_h / h)
