"""The polygon kind: ``"polygon": [x1, y1, ..., xN, yN]`` with N >= 3 vertices (a segmentation outline).

Stored clockwise on screen from the top-left-most vertex (`geometry.canonical_polygon`, the quad rule for
any N). Valid when finite, no vertex repeated, no two edges that are not neighbours crossing, and of
non-zero area (`geometry.polygon_problem_codes`); concave polygons are fine. Matched by polygon IoU
(shapely) against every region kind.
"""

from __future__ import annotations

import numpy as np

from src.datasets import geometry
from src.datasets.kinds.base import GeometryKind


class Polygon(GeometryKind):
    key = "polygon"
    order = 3
    values = None
    min_values = 6
    layout = "[x1, y1, x2, y2, x3, y3, ...] (3 or more vertices)"
    noun = "polygon"
    problems = tuple(None if p is None else f"invalid polygon: {p}" for p in geometry.POLYGON_PROBLEMS)

    def problem_codes(self, rows: np.ndarray) -> np.ndarray:
        return geometry.polygon_problem_codes(rows)

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        rows = np.array(rows, dtype=np.float64)
        return geometry.canonical_polygon(rows) if len(rows) else rows


KIND = Polygon()
