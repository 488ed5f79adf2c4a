"""The quad kind: ``"quad": [x1, y1, x2, y2, x3, y3, x4, y4]``, a quadrilateral (rotated text, a tilted tag).

Stored clockwise on screen from the top-left-most vertex (`geometry.canonical_quad8`), whatever order the
file wrote. Valid when finite, no vertex repeated, no two opposite edges crossing (a bow-tie) and of non-zero
area (`geometry.polygon_problem_codes`, the polygon rules for 4 vertices); concave quads are fine. Matched by
polygon IoU (shapely).
"""

from __future__ import annotations

import numpy as np

from src.datasets import geometry
from src.datasets.kinds.base import GeometryKind


class Quad(GeometryKind):
    key = "quad"
    order = 1
    values = 8
    layout = "[x1, y1, x2, y2, x3, y3, x4, y4]"
    noun = "quad"
    legacy_token = "quad"
    problems = tuple(None if p is None else f"invalid quad: {p}" for p in geometry.QUAD_PROBLEMS)

    def problem_codes(self, rows: np.ndarray) -> np.ndarray:
        return geometry.polygon_problem_codes(np.asarray(rows, dtype=np.float64).reshape(-1, 8))

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        return geometry.canonical_quad8(np.asarray(rows, dtype=np.float64).reshape(-1, 8))


KIND = Quad()
