"""The point kind: ``"point_2d": [x, y]``, Qwen3-VL's native pointing answer.

Any finite point inside the image (``[0, width] x [0, height]``, up to 1 px outside clamped, as for every
kind) is valid. A point has no area, so it is matched by its own rules (`src.datasets.kinds.similarity`): a
point against a region (box, quad, polygon) scores 1 when it lies inside the region (its edge included), else
0; a point against a point scores ``max(0, 1 - d / POINT_RADIUS)`` where ``d`` is their distance measured in
image sizes (``hypot(dx / width, dy / height)``), so the 0.5 threshold of AP50 and of the F1 at IoU 0.5
accepts a point within 5% of the image's size. After an augmentation a point that leaves the image is dropped.
"""

from __future__ import annotations

import numpy as np

from src.datasets.kinds.base import GeometryKind

POINT_RADIUS = 0.1
"""Point-to-point similarity falls from 1 (same place) to 0 at this distance, in image sizes."""
_EDGE_EPS = 1e-6  # px: float error of a transform that lands a point on the image's edge


class Point(GeometryKind):
    key = "point_2d"
    order = 2
    values = 2
    layout = "[x, y]"
    noun = "point"
    region = False
    problems = (None, "non-finite coordinates")

    def problem_codes(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        return np.where(np.all(np.isfinite(rows), axis=1), 0, 1).astype(np.int64)

    def area(self, rows: np.ndarray) -> np.ndarray:
        return np.zeros(len(np.asarray(rows).reshape(-1, 2)))

    def shapes(self, rows: np.ndarray):  # noqa: ANN201 - shapely geometries
        import shapely

        return shapely.points(np.asarray(rows, dtype=np.float64).reshape(-1, 2))

    def clip(self, rows: np.ndarray, width: float, height: float,
             min_visibility: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pts = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        keep = ((pts[:, 0] >= -_EDGE_EPS) & (pts[:, 0] <= width + _EDGE_EPS)
                & (pts[:, 1] >= -_EDGE_EPS) & (pts[:, 1] <= height + _EDGE_EPS))
        return self.clamp(pts[keep], width, height) if keep.any() else pts[keep], keep, np.zeros(len(pts), bool)

    def outline(self, values, sx: float, sy: float) -> list[tuple[float, float]]:
        x, y = float(values[0]) * sx, float(values[1]) * sy
        r = 4.0  # a small diamond around the point: what labels are placed against
        return [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]

    def draw(self, draw, outline, colour, width, dashed=None) -> None:  # noqa: ANN001
        xs, ys = [p[0] for p in outline], [p[1] for p in outline]
        box = (min(xs), min(ys), max(xs), max(ys))
        if dashed is not None:  # an ignore point: an open ring
            draw.ellipse(box, outline=colour, width=max(1, width // 2))
        else:
            draw.ellipse(box, fill=colour, outline=colour)


KIND = Point()
