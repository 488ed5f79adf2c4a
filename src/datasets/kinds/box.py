"""The box kind: ``"bbox_2d": [x1, y1, x2, y2]``, an axis-aligned rectangle, Qwen3-VL's grounding answer.

``x2``/``y2`` are exclusive edges (like ``PIL.Image.getbbox()``); valid when ``x1 < x2`` and ``y1 < y2``. A
predicted box with ``x2 < x1`` or ``y2 < y1`` is malformed (`read_problem`): dropped and counted where answers
and prediction lines are read.
A box moved by a rotation becomes the axis-aligned bounds of its four moved corners (it cannot be tighter
without the object's mask). Box against box is matched by the box IoU formula (COCO's), against any other
region by polygon IoU of its four corners.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from src.datasets import geometry
from src.datasets.kinds.base import GeometryKind


class Box(GeometryKind):
    key = "bbox_2d"
    order = 0
    values = 4
    layout = "[x1, y1, x2, y2]"
    noun = "box"
    axis_aligned = True
    legacy_token = "box"
    problems = (None,
                "x2 < x1: corners are swapped; write [x1, y1, x2, y2] with x1 < x2 and y1 < y2",
                "zero-area box (x1 == x2)",
                "y2 < y1: corners are swapped; write [x1, y1, x2, y2] with x1 < x2 and y1 < y2",
                "zero-area box (y1 == y2)",
                "non-finite coordinates")

    def problem_codes(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        x1, y1, x2, y2 = rows.T
        codes = np.zeros(len(rows), dtype=np.int64)
        # The first failing check wins: written from the last to the first.
        for code, bad in ((4, y2 == y1), (3, y2 < y1), (2, x2 == x1), (1, x2 < x1),
                          (5, ~np.all(np.isfinite(rows), axis=1))):
            codes[bad] = code
        return codes

    def read_problem(self, values: list[float] | tuple[float, ...]) -> str | None:
        # Swapped corners have no one meaning: the box IoU formula gave them 0, polygon IoU and point rules
        # the unswapped box's score. Malformed, like a wrong count.
        x1, y1, x2, y2 = values
        return self.problems[1] if x2 < x1 else self.problems[3] if y2 < y1 else None

    def to_grid(self, rows: np.ndarray, width: float, height: float, norm: geometry.NormMode) -> np.ndarray:
        """`geometry.pixel_to_norm` (ms-swift's rounding), except that a box whose two x (or y) edges round to the
        same value is written one grid step wide, on the side of its centre: a valid box never becomes a zero-area
        target (a 3 px pole in a 4000 px photo did, which no answer can match)."""
        rows = np.asarray(rows, dtype=np.float64)
        grid = geometry.pixel_to_norm(rows, width, height, norm)
        flat_px, flat = rows.reshape(-1, 4), grid.reshape(-1, 4)  # `flat` is a view: written through to `grid`
        for lo, size in ((0, width), (1, height)):
            collapsed = (flat[:, lo] == flat[:, lo + 2]) & (flat_px[:, lo] < flat_px[:, lo + 2])
            if not collapsed.any():
                continue
            top = {"norm1000": 1000.0, "norm100": 100.0}.get(norm, size)  # the grid's last value
            centre = (flat_px[collapsed, lo] + flat_px[collapsed, lo + 2]) / 2 * (top / size if norm != "none" else 1)
            at = flat[collapsed, lo]
            up = ((centre >= at) & (at < np.floor(top))) | (at <= 0)
            flat[collapsed, lo] = np.where(up, at, at - 1)
            flat[collapsed, lo + 2] = np.where(up, at + 1, at)
        return grid

    def xyxy(self, rows: np.ndarray) -> np.ndarray:
        return np.array(rows, dtype=np.float64).reshape(-1, 4)

    def area(self, rows: np.ndarray) -> np.ndarray:
        boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)

    def vertices(self, rows: np.ndarray) -> np.ndarray:
        return geometry.xyxy_to_quad8(np.asarray(rows, dtype=np.float64).reshape(-1, 4))

    def transform(self, rows: np.ndarray, points_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        # Through the corners, so any transform (flip, rotation) gives the bounds of where they land.
        return geometry.quad8_to_xyxy(points_fn(self.vertices(rows)).reshape(-1, 8))

    def clip(self, rows: np.ndarray, width: float, height: float,
             min_visibility: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        clipped = self.clamp(boxes, width, height)  # for boxes, clamping is clipping
        before, after = self.area(boxes), self.area(clipped)
        keep = (after > 0) & (after >= min_visibility * before)
        return clipped[keep], keep, np.zeros(len(boxes), dtype=bool)

    def outline(self, values, sx: float, sy: float) -> list[tuple[float, float]]:
        x1, y1, x2, y2 = (float(v) for v in values)
        # x2/y2 are exclusive edges: the box's last pixel column is x2 * sx - 1 after scaling.
        xs, ys = [x1 * sx, x2 * sx - 1, x2 * sx - 1, x1 * sx], [y1 * sy, y1 * sy, y2 * sy - 1, y2 * sy - 1]
        return list(zip(xs, ys, strict=True))


KIND = Box()
