"""The grounding rewards of stage 3 (src/rewards/grounding.py) against hand-written completions, with exact
expected values. The truth: a cat box and a sign quad on the 0..1000 grid."""

from __future__ import annotations

import json

import pytest

from src.rewards.grounding import REWARDS, GroundTruth, truth_from_answer

CAT = {"bbox_2d": [100, 100, 300, 300], "label": "cat"}
SIGN = {"quad": [500, 500, 700, 500, 700, 700, 500, 700], "label": "sign"}
TRUTH = truth_from_answer(json.dumps([CAT, SIGN]))


def answer(*objects: dict) -> str:
    return json.dumps(list(objects), ensure_ascii=False)


def rewards(completion: str, truth: GroundTruth = TRUTH) -> dict[str, float]:
    return {name: round(fn(completion, truth), 6) for name, fn in REWARDS.items()}


SHIFTED_CAT = {"bbox_2d": [150, 100, 350, 300], "label": "cat"}  # IoU 150*200 / (250*200) = 0.6
TILTED_SIGN = {"quad": [500, 500, 700, 500, 700, 700, 500, 600], "label": "sign"}  # 30,000 of 40,000: IoU 0.75
CASES = {
    "empty": ("", dict(grounding_format=0, grounding_f1=0, grounding_iou=0, grounding_duplicates=0,
                       grounding_count=-1, grounding_ap50=0)),
    "junk": ("I see a cat.", dict(grounding_format=0, grounding_f1=0, grounding_iou=0, grounding_duplicates=0,
                                  grounding_count=-1, grounding_ap50=0)),
    # The complete entry of a cut-off list counts as an object; the answer is not well formed.
    "truncated": (answer(CAT, SIGN)[:60], dict(grounding_format=0, grounding_f1=round(2 / 3, 6), grounding_iou=1,
                                               grounding_duplicates=0, grounding_count=-0.5, grounding_ap50=0.5)),
    "perfect": (answer(CAT, SIGN), dict(grounding_format=1, grounding_f1=1, grounding_iou=1, grounding_duplicates=0,
                                        grounding_count=0, grounding_ap50=1)),
    "perfect, other order": (answer(SIGN, CAT), dict(grounding_format=1, grounding_f1=1, grounding_iou=1,
                                                     grounding_duplicates=0, grounding_count=0, grounding_ap50=1)),
    "shifted box": (answer(SHIFTED_CAT, SIGN), dict(grounding_format=1, grounding_f1=1, grounding_iou=0.8,
                                                    grounding_duplicates=0, grounding_count=0, grounding_ap50=1)),
    "box shifted past 0.5": (answer({"bbox_2d": [200, 100, 400, 300], "label": "cat"}, SIGN),
                             dict(grounding_format=1, grounding_f1=0.5, grounding_iou=1, grounding_duplicates=0,
                                  grounding_count=0, grounding_ap50=0.5)),
    "wrong label": (answer({**CAT, "label": "dog"}, SIGN), dict(grounding_format=1, grounding_f1=0.5,
                                                                grounding_iou=1, grounding_duplicates=0,
                                                                grounding_count=0, grounding_ap50=0.5)),
    "duplicate": (answer(CAT, CAT, SIGN), dict(grounding_format=1, grounding_f1=0.8, grounding_iou=1,
                                               grounding_duplicates=round(-1 / 3, 6), grounding_count=-0.5,
                                               grounding_ap50=1)),
    "quad": (answer(CAT, TILTED_SIGN), dict(grounding_format=1, grounding_f1=1, grounding_iou=0.875,
                                            grounding_duplicates=0, grounding_count=0, grounding_ap50=1)),
    "nothing found": ("[]", dict(grounding_format=1, grounding_f1=0, grounding_iou=0, grounding_duplicates=0,
                                 grounding_count=-1, grounding_ap50=0)),
}


@pytest.mark.parametrize("name", CASES)
def test_each_reward_on_a_hand_written_completion(name):
    completion, expected = CASES[name]
    assert rewards(completion) == {k: float(v) for k, v in expected.items()}


def test_an_image_without_objects_rewards_the_empty_answer_and_nothing_else():
    nothing = truth_from_answer("[]")
    assert rewards("[]", nothing) == dict(grounding_format=1, grounding_f1=1, grounding_iou=1, grounding_duplicates=0,
                                          grounding_count=0, grounding_ap50=1)
    assert rewards(answer(CAT), nothing)["grounding_f1"] == 0 and rewards(answer(CAT), nothing)["grounding_count"] == -1
    for no_answer in ("", "There is nothing.", '[{"bbox_2d": [1, 2'):  # no objects, and no answer either
        scored = rewards(no_answer, nothing)
        assert (scored["grounding_f1"], scored["grounding_iou"], scored["grounding_ap50"]) == (0, 0, 0), no_answer


def test_a_reasoning_block_before_the_answer_is_not_penalised():
    assert rewards("<think>\n\n</think>\n\n" + answer(CAT, SIGN)) == rewards(answer(CAT, SIGN))


def test_the_ground_truth_travels_as_json_unchanged():
    assert GroundTruth.from_json(TRUTH.to_json()) == TRUTH
    assert [o.kind for o in TRUTH.objects] == ["bbox_2d", "quad"]
    with pytest.raises(ValueError, match="does not parse"):
        truth_from_answer('[{"bbox_2d": [1, 2')
