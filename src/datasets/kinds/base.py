"""What a geometry kind declares (`GeometryKind`), with the defaults most kinds share.

A kind is one way of writing where an object is: a box, a quad, a point, a polygon. Its module in this
package holds everything that depends on the kind; the rest of the project asks the registry
(`src.datasets.kinds`) and never spells a kind's key itself. Values are always rows of interleaved
``x, y`` pixel coordinates (``(N, 2k)`` arrays, the conventions of :mod:`src.datasets.geometry`); every
method is pure (new arrays out, inputs untouched).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from src.datasets import geometry

__all__ = ["LINEWORK_VERTICES", "GeometryKind"]


def _rows(rows: object) -> np.ndarray:
    """`rows` as a float ``(N, 2k)`` array (an empty group keeps its width)."""
    arr = np.asarray(rows, dtype=np.float64)
    return arr if arr.ndim == 2 else arr.reshape(len(arr), -1) if arr.size else arr.reshape(0, 0)


LINEWORK_VERTICES = 24
"""An outline crossing itself of at most this many vertices is repaired by ``make_valid``'s default "linework"
method (every lobe as drawn); a longer one by its "structure" method, ~100x faster (a 400-vertex scribble: 0.34 s
against 37 s; "linework" grows with the cube of the vertex count). The two agree where the crossings are small (a
dense contour whose neighbouring vertices swapped on the grid); "structure" fills a wild scribble's enclosed areas."""


@functools.lru_cache(maxsize=256)
def _repaired(vertices: bytes):  # noqa: ANN202 - a shapely geometry
    """The outline of float64 `vertices` (x, y pairs) crossing itself, repaired by ``make_valid`` (the method by
    `LINEWORK_VERTICES`). Kept: the repair is costly and the same outline is compared again and again (by every
    reward of a GRPO step, against each side of a matching); shapely geometries are immutable, so sharing is safe."""
    import shapely

    outline = np.frombuffer(vertices, dtype=np.float64).reshape(-1, 2)
    polygon = shapely.polygons(outline)
    if len(outline) <= LINEWORK_VERTICES:
        return shapely.make_valid(polygon)
    return shapely.make_valid(polygon, method="structure", keep_collapsed=False)


class GeometryKind:
    """One geometry kind. Subclasses set the class attributes and override what differs."""

    key: str = ""
    """The JSON key in records and in answers (``"quad"``), also the kind's name everywhere."""
    order: int = -1
    """Its stable index: record tables and stored verdicts keep kinds as this number (never reuse one)."""
    values: int | None = None
    """Coordinate values per object; None when the count varies (then `min_values` and even)."""
    min_values: int = 0
    """The fewest values a variable-count kind allows."""
    layout: str = ""
    """How the values are written, for messages: ``"[x1, y1, x2, y2]"``."""
    noun: str = ""
    """What one object of the kind is called in messages (``"box"``)."""
    region: bool = True
    """True when it covers an area (matched by IoU); False for a point (matched by the point rules)."""
    axis_aligned: bool = False
    """True for an axis-aligned rectangle (a box): two such objects are compared by the box IoU formula."""
    legacy_token: str | None = None
    """The Qwen2-VL special-token name (``<|box_start|>``: ``"box"``) when the legacy answer form has one."""
    problems: tuple[str | None, ...] = (None,)
    """The text of each code `problem_codes` returns (index 0, None: nothing wrong)."""

    # ------------------------------------------------------------------ values and validity

    def count_ok(self, n: int) -> bool:
        """Whether `n` coordinate values can make one object of this kind."""
        if self.values is not None:
            return n == self.values
        return n >= self.min_values and n % 2 == 0

    def count_text(self) -> str:
        """The count rule for messages: "a list of 2 numbers [x, y]"."""
        if self.values is not None:
            return f"a list of {self.values} numbers {self.layout}"
        return f"a list of at least {self.min_values} numbers, an even count, {self.layout}"

    def problem_codes(self, rows: np.ndarray) -> np.ndarray:
        """What is wrong with each object of `rows` ``(N, 2k)`` (finite, clamped values of one count), as codes
        into `problems`: 0 for nothing. The one implementation of the kind's rules; `problem` reads one."""
        return np.where(np.all(np.isfinite(rows), axis=1), 0, len(self.problems)).astype(np.int64)

    def problem(self, values: list[float] | tuple[float, ...]) -> str | None:
        """Why one object's values are unusable (the contract's message), or None."""
        code = int(self.problem_codes(np.asarray(values, dtype=np.float64)[None])[0])
        return None if code == 0 else self.problems[code]

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        """The stored form of valid `rows` (vertex order for polygons); the identity by default."""
        return _rows(rows).copy()

    def clamp(self, rows: np.ndarray, width: float, height: float) -> np.ndarray:
        """`rows` clipped into the image ``[0, width] x [0, height]`` value by value."""
        return geometry.clamp_points(_rows(rows), width, height)

    # ------------------------------------------------------------------ spaces and measures

    def to_grid(self, rows: np.ndarray, width: float, height: float, norm: geometry.NormMode) -> np.ndarray:
        """Pixels -> the answer's grid (`geometry.pixel_to_norm`, ties to even: ms-swift's rule)."""
        return geometry.pixel_to_norm(rows, width, height, norm)

    def from_grid(self, rows: np.ndarray, width: float, height: float, norm: geometry.NormMode) -> np.ndarray:
        """The answer's grid -> float pixels (`geometry.norm_to_pixel`)."""
        return geometry.norm_to_pixel(rows, width, height, norm)

    def xyxy(self, rows: np.ndarray) -> np.ndarray:
        """The axis-aligned bounding box ``(N, 4)`` of each object."""
        return geometry.points_xyxy(_rows(rows))

    def area(self, rows: np.ndarray) -> np.ndarray:
        """Each object's area in px^2 ``(N,)`` (0 for a point)."""
        rows = _rows(rows)
        return np.asarray(geometry.polygon_area(rows), dtype=np.float64).reshape(-1) if len(rows) else np.zeros(0)

    def vertices(self, rows: np.ndarray) -> np.ndarray:
        """Each object as polygon vertices ``(N, 2m)`` (a box: its 4 corners); a point's own ``(N, 2)``."""
        return _rows(rows)

    def shapes(self, rows: np.ndarray):  # noqa: ANN201 - shapely geometries
        """Each object as a shapely geometry (a polygon, repaired by ``make_valid`` when it crosses itself, by the
        method `LINEWORK_VERTICES` chooses)."""
        import shapely

        verts = self.vertices(rows)
        if not len(verts):
            return np.empty(0, dtype=object)
        polys = shapely.polygons(verts.reshape(len(verts), -1, 2))
        for i in np.flatnonzero(~shapely.is_valid(polys)):
            polys[i] = _repaired(np.ascontiguousarray(verts[i], dtype=np.float64).tobytes())
        return polys

    # ------------------------------------------------------------------ augmentation

    def transform(self, rows: np.ndarray, points_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """`rows` after a point transform (a flip, rotation, crop...) applied to every vertex, in stored form."""
        rows = _rows(rows)
        if not len(rows):
            return rows
        return self.canonical(points_fn(rows).reshape(len(rows), -1))

    def clip(self, rows: np.ndarray, width: float, height: float,
             min_visibility: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """After an op that may move objects out of the image: ``(kept rows, kept mask, invalid mask)`` where an
        object is kept when its area inside the image is above 0 and at least `min_visibility` of its whole
        area, and its clamped vertices still make a valid object (``invalid``: visible enough but not valid
        once clamped). Kept rows are clamped and in stored form."""
        import shapely

        rows = _rows(rows)
        if not len(rows):
            empty = np.zeros(0, dtype=bool)
            return rows, empty, empty
        before = self.area(rows)
        after = np.asarray(shapely.area(shapely.clip_by_rect(self.shapes(rows), 0.0, 0.0, float(width),
                                                             float(height))), dtype=np.float64)
        keep = (after > 0) & (after >= min_visibility * before)
        clamped = self.clamp(rows, width, height)
        valid = self.problem_codes(clamped) == 0
        invalid = keep & ~valid
        keep &= valid
        # Clamping can change the vertex order's start (a vertex moves onto an edge).
        return self.canonical(clamped[keep]) if keep.any() else clamped[keep], keep, invalid

    # ------------------------------------------------------------------ drawing

    def outline(self, values: tuple[float, ...] | list[float], sx: float, sy: float) -> list[tuple[float, float]]:
        """The polygon drawn for one object in an image scaled by ``(sx, sy)`` (not clamped)."""
        pts = np.asarray(values, dtype=np.float64)
        return list(zip((pts[0::2] * sx).tolist(), (pts[1::2] * sy).tolist(), strict=True))

    def draw(self, draw, outline: list[tuple[float, float]], colour: tuple[int, int, int], width: int,
             dashed: Callable | None = None) -> None:
        """Draw one object's `outline` (from `outline`, clamped) with PIL's `draw`; `dashed(draw, poly, colour,
        width)` draws it dashed (an ignore region)."""
        if dashed is not None:
            dashed(draw, outline, colour, width)
        else:
            draw.polygon(outline, outline=colour, width=width)

    # ------------------------------------------------------------------ answers

    def read_values(self, value: object) -> list[float] | None:
        """The coordinates of an answer entry's value (a list of the right count of finite numbers that
        `read_problem` accepts), else None. Python's json reads `NaN`, `Infinity` and `1e400`: such a value is
        no coordinate (it would reach a prediction line as `NaN`, which strict JSON readers refuse)."""
        if (not isinstance(value, list) or not self.count_ok(len(value))
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            return None
        try:
            out = [float(v) for v in value]
        except OverflowError:
            return None
        if not all(math.isfinite(v) for v in out):
            return None
        return None if self.read_problem(out) else out

    def read_problem(self, values: list[float] | tuple[float, ...]) -> str | None:
        """Why values of the right count, read from an answer or a prediction, are malformed for this kind (a
        box with swapped corners), else None; such an object is dropped and counted where it is read
        (`read_values`, `src.datasets.objects.values_fit`), never scored. Only what no reading can mend: a zero
        size or a value outside the image is not malformed here (it scores as a false positive, as in COCO)."""
        return None

    def __repr__(self) -> str:
        return f"<geometry kind {self.key}>"
