"""Pixels -> the answer's grid -> pixels (src/datasets/kinds/box.py `to_grid`, src/datasets/builders/codec.py):
every valid box stays a box with an area on the grid, and the round trip is within half a grid step."""

from dataclasses import dataclass

import numpy as np
import pytest

from src.datasets import kinds
from src.datasets.answer import parse_answer
from src.datasets.builders.codec import AnswerCodec
from src.datasets.geometry import pixel_to_norm
from src.datasets.objects import GeoObject


@dataclass
class Image:
    width: int
    height: int
    objects: tuple


@pytest.mark.parametrize("norm", ["norm1000", "norm100", "none"])
def test_a_thin_valid_box_is_never_a_zero_area_target(norm):
    rng = np.random.default_rng(7)
    w, h = 4000, 3000
    x1 = rng.uniform(0, w - 5, 500)
    y1 = rng.uniform(0, h - 5, 500)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0.05, 4, 500), y1 + rng.uniform(0.05, 4, 500)], axis=1)
    boxes = np.vstack([boxes, [[w - 0.5, h - 0.5, w, h], [0, 0, 0.5, 0.5]]])  # on the far and near edges
    objects = tuple(GeoObject("bbox_2d", tuple(b), "pole") for b in boxes.tolist())
    written = parse_answer(AnswerCodec(norm).write([Image(w, h, objects)])).objects
    grid = np.array([o["coords"] for o in written])
    assert len(grid) == len(boxes)
    assert np.all(grid[:, 2] > grid[:, 0]) and np.all(grid[:, 3] > grid[:, 1])  # an area for every box
    top = {"norm1000": (1000, 1000), "norm100": (100, 100), "none": (w, h)}[norm]
    assert grid.min() >= 0 and np.all(grid[:, [0, 2]] <= top[0]) and np.all(grid[:, [1, 3]] <= top[1])
    # each edge is ms-swift's rounding, or one step from it where the box had collapsed
    plain = pixel_to_norm(boxes, w, h, norm)
    assert np.abs(grid - plain).max() <= 1
    collapsed = (plain[:, 0] == plain[:, 2]) | (plain[:, 1] == plain[:, 3])
    assert np.array_equal(grid[~collapsed], plain[~collapsed])
    # the one-step box covers the box's centre
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 * (np.array(top) / np.array([w, h]) if norm != "none" else 1)
    assert np.all((grid[:, :2] - 0.5 <= centre) & (centre <= grid[:, 2:] + 0.5))


def test_the_round_trip_is_within_half_a_grid_step_for_every_kind():
    rng = np.random.default_rng(3)
    codec = AnswerCodec("norm1000")
    for _ in range(200):
        w, h = int(rng.integers(1, 9000)), int(rng.integers(1, 9000))
        objects = []
        for key in kinds.KEYS:
            n = kinds.get(key).values or 10
            pts = rng.uniform(0, 1, n) * np.tile([w, h], n // 2)
            if key == "bbox_2d":
                pts = np.concatenate([np.minimum(pts[:2], pts[2:]), np.maximum(pts[:2], pts[2:]) + 1e-3])
            objects.append(GeoObject(key, tuple(pts.tolist()), key))
        back = codec.to_pixels(codec.answer_objects([Image(w, h, tuple(objects))]), w, h)
        for before, after in zip(objects, back, strict=True):
            error = np.abs(np.array(after.points) - np.array(before.points)) / np.tile([w, h], len(before.points) // 2)
            # half a step, plus one step where a collapsed box was widened, plus the 0.01 px of to_pixels
            assert error.max() * 1000 <= (1.5 if before.kind == "bbox_2d" else 0.5) + 0.01 * 1000 / min(w, h)
