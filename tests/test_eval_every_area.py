"""AP counts every object whatever its area: pycocotools' area range "all" ends at 1e10 px^2 (1e5 squared), and
COCOeval ignores a ground-truth object or an unmatched detection outside its area range, silently. A gigapixel
image (an aerial mosaic, a slide scan) holds such objects, and a hostile answer can write such a box."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from src.datasets.objects import GeoObject
from src.evaluation.metrics import ImagePair, evaluate_images
from src.rewards.grounding import REWARDS, truth_from_answer

TRUE = GeoObject("bbox_2d", (10.0, 10.0, 50.0, 50.0), "field")
HUGE = GeoObject("bbox_2d", (0.0, 0.0, 2e5, 1e5), "field")  # 2e10 px^2


def _ap(dets: list[GeoObject], gts: list[GeoObject]) -> dict:
    return evaluate_images([ImagePair("s", "i", dets, gts, np.zeros(len(gts), dtype=bool))])["class_agnostic"]


def test_a_huge_false_positive_ranked_first_halves_ap():
    got = _ap([replace(HUGE, score=0.9), replace(TRUE, score=0.8)], [TRUE])
    assert (got["AP"], got["AP50"], got["fp"]) == (pytest.approx(0.5), pytest.approx(0.5), 1)


def test_a_huge_ground_truth_object_that_is_missed_is_a_miss():
    assert _ap([], [HUGE])["AP"] == 0.0
    assert _ap([HUGE], [HUGE])["AP"] == pytest.approx(1.0)


def test_a_huge_box_first_in_an_answer_is_no_free_guess_for_ap50():
    truth = truth_from_answer('[{"bbox_2d": [100, 100, 300, 300], "label": "cat"}]')
    completion = ('[{"bbox_2d": [0, 0, 200000, 100000], "label": "cat"}, '
                  '{"bbox_2d": [100, 100, 300, 300], "label": "cat"}]')
    assert REWARDS["grounding_ap50"](completion, truth) == pytest.approx(0.5)
