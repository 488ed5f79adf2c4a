"""The grounding rewards (src/rewards/grounding.py) equal the straightforward computation of
tests/support/reward_reference.py (every pair compared one by one) on random dense answers, and the bound on
what an outline that crosses itself may cost."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from src.datasets.objects import GeoObject
from src.evaluation.metrics import pairwise_iou
from src.rewards.grounding import MAX_REPAIRED_VERTICES, REWARDS, GroundTruth, predicted, truth_from_answer
from tests.support import reward_reference

SEEDS = 40
LABELS = ["cat", "dog", "sign", "caf\u00e9", "cafe\u0301", "Cat", ""]  # "café" twice: NFC and NFD, one label


def _box(rng: random.Random) -> list[float]:
    x, y = rng.uniform(0, 900), rng.uniform(0, 900)
    return [round(x), round(y), round(x + rng.uniform(5, 150)), round(y + rng.uniform(5, 150))]


def _ring(rng: random.Random, n: int, crossing: bool) -> list[float]:
    cx, cy, r = rng.uniform(150, 850), rng.uniform(150, 850), rng.uniform(20, 140)
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
    if crossing:
        rng.shuffle(angles)  # a scribble: edges cross, the shape is repaired
    return [round(v) for a in angles for v in (cx + r * math.cos(a), cy + r * math.sin(a))]


def _object(rng: random.Random) -> dict:
    roll = rng.random()
    if roll < 0.35:
        geometry = {"bbox_2d": _box(rng)}
    elif roll < 0.6:
        geometry = {"quad": _ring(rng, 4, rng.random() < 0.2)}
    elif roll < 0.85:
        geometry = {"polygon": _ring(rng, rng.randint(3, 14), rng.random() < 0.3)}
    else:
        geometry = {"point_2d": [rng.randint(0, 1000), rng.randint(0, 1000)]}
    return {**geometry, "label": rng.choice(LABELS)}


def _jitter(entry: dict, rng: random.Random) -> dict:
    key = next(k for k in entry if k != "label")
    values = [v + rng.randint(-15, 15) for v in entry[key]]
    if key == "bbox_2d" and (values[2] <= values[0] or values[3] <= values[1]):
        values = entry[key]
    return {key: values, "label": entry["label"] if rng.random() < 0.85 else rng.choice(LABELS)}


def _case(seed: int) -> tuple[str, GroundTruth]:
    rng = random.Random(seed)
    truth_entries = [_object(rng) for _ in range(rng.randint(0, 25))]
    answer = []
    for entry in truth_entries:
        if rng.random() < 0.7:
            answer.append(_jitter(entry, rng))
    answer += [_object(rng) for _ in range(rng.randint(0, 15))]
    for _ in range(rng.randint(0, 8)):  # repeats, exact and near, as degenerate generations write them
        if answer:
            picked = rng.choice(answer)
            answer.append(picked if rng.random() < 0.5 else _jitter(picked, rng))
    ignore = []
    for _ in range(rng.randint(0, 3)):
        region = _object(rng)
        if "point_2d" in region:
            continue
        key = next(k for k in region if k != "label")
        ignore.append(GeoObject(key, tuple(float(v) for v in region[key]),
                                "" if rng.random() < 0.4 else region["label"], ignore=True))
        if rng.random() < 0.7:  # a prediction on the region, its label or another
            answer.append(_jitter(region, rng))
    rng.shuffle(answer)
    truth = truth_from_answer(json.dumps(truth_entries), ignore)
    return json.dumps(answer, ensure_ascii=False), truth


@pytest.mark.parametrize("seed", range(SEEDS))
def test_every_reward_equals_the_pair_by_pair_computation(seed):
    completion, truth = _case(seed)
    expected = reward_reference.rewards(completion, truth)
    got = {name: fn(completion, truth) for name, fn in REWARDS.items()}
    assert got.keys() == expected.keys()
    for name in got:
        assert got[name] == pytest.approx(expected[name], abs=1e-12, rel=0), name
    dets = list(predicted(completion))
    for gts in (truth.objects, dets):  # the matrices the rewards and AP50 read, repeats and all
        np.testing.assert_allclose(pairwise_iou(dets, list(gts), size=truth.size),
                                   reward_reference.iou_matrix(dets, gts, truth.size), rtol=0, atol=1e-12)


def test_the_random_cases_hold_what_the_rewards_must_get_right():
    # Not vacuous: matches, repeats, predictions set aside on ignore regions, both spellings of a label.
    cases = [_case(seed) for seed in range(SEEDS)]
    scored = [reward_reference.rewards(c, t) for c, t in cases]
    assert sum(s["grounding_f1"] > 0 for s in scored) > 25
    assert sum(s["grounding_duplicates"] < 0 for s in scored) > 15
    assert sum(len(reward_reference.scored(c, t)) < len(predicted(c)) for c, t in cases) > 10
    assert any("caf\u00e9" in c and "cafe\u0301" in c for c, _ in cases)


TRUTH = truth_from_answer(json.dumps([{"polygon": _ring(random.Random(3), 40, False), "label": "lake"}]))


def _scribble(vertices: int) -> list[float]:
    # The truth's outline with its vertices out of order: it crosses itself, and repaired it still overlaps.
    ring = _ring(random.Random(3), vertices, False)
    pairs = [ring[i:i + 2] for i in range(0, len(ring), 2)]
    return [v for pair in pairs[0::2] + pairs[1::2] for v in pair]


def test_an_outline_crossing_itself_past_the_vertex_bound_is_a_malformed_entry():
    cat = {"bbox_2d": [100, 100, 300, 300], "label": "cat"}
    far = _scribble(MAX_REPAIRED_VERTICES + 8)
    assert len(far) == 2 * (MAX_REPAIRED_VERTICES + 8)
    got = {name: fn(json.dumps([{"polygon": far, "label": "lake"}, cat]), TRUTH) for name, fn in REWARDS.items()}
    alone = {name: fn(json.dumps([cat]), TRUTH) for name, fn in REWARDS.items()}
    # Dropped as an entry with a non-finite value is: the answer is not well formed, the rest scores as if alone.
    assert got == {**alone, "grounding_format": 0.0}
    # At the bound it is still repaired and scored, and an outline that does not cross itself is never refused.
    near = _ring(random.Random(3), MAX_REPAIRED_VERTICES, False)
    near = [v for i in range(0, len(near), 4) for v in near[i + 2:i + 4] + near[i:i + 2]]  # crosses itself
    assert len(predicted(json.dumps([{"polygon": near, "label": "lake"}]))) == 1
    simple = json.dumps([{"polygon": _ring(random.Random(3), 40, False), "label": "lake"}])
    assert REWARDS["grounding_f1"](simple, TRUTH) == 1.0 and REWARDS["grounding_format"](simple, TRUTH) == 1.0


def test_a_dense_contour_crossing_itself_a_little_is_scored_and_repaired_fast():
    """A 40-vertex contour whose neighbouring vertices swapped (as a model's rounding onto the grid does) crosses
    itself: it is repaired, not dropped, and scored against its truth; past `LINEWORK_VERTICES` by the "structure"
    repair, which gives the region "linework" gives for such a small crossing."""
    import shapely

    from src.datasets import kinds
    from src.datasets.kinds.base import LINEWORK_VERTICES

    ring = _ring(random.Random(3), 40, False)
    swapped = ring[:10] + ring[12:14] + ring[10:12] + ring[14:]  # vertices 5 and 6 swapped
    outline = np.array(swapped, dtype=np.float64).reshape(-1, 2)
    assert not shapely.is_valid(shapely.Polygon(outline)) and len(outline) > LINEWORK_VERTICES
    answer = json.dumps([{"polygon": swapped, "label": "lake"}])
    assert REWARDS["grounding_format"](answer, TRUTH) == 1.0 and REWARDS["grounding_f1"](answer, TRUTH) == 1.0
    shape = kinds.get("polygon").shapes(np.array([swapped], dtype=np.float64))[0]
    structure = shapely.make_valid(shapely.Polygon(outline), method="structure", keep_collapsed=False)
    assert shapely.equals(shape, structure)
    assert abs(shape.area - shapely.make_valid(shapely.Polygon(outline)).area) < 1e-6 * shape.area
    # A wild scribble past the bound: "structure" (fast) is the repair, and there the two methods differ.
    wild = np.array(_ring(random.Random(5), 40, True), dtype=np.float64).reshape(-1, 2)
    repaired = kinds.get("polygon").shapes(wild.reshape(1, -1))[0]
    fast = shapely.make_valid(shapely.Polygon(wild), method="structure", keep_collapsed=False)
    assert shapely.equals(repaired, fast) and abs(fast.area - shapely.make_valid(shapely.Polygon(wild)).area) > 1.0
