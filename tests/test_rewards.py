"""The grounding rewards of stage 3 (src/rewards/grounding.py) against hand-written completions, with exact
expected values. The truth: a cat box and a sign quad on the 0..1000 grid."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from src.inference.predictions import PredictedObject
from src.rewards.grounding import REWARDS, GroundTruth, truth_for, truth_from_answer

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


def test_the_ground_truth_travels_unchanged():
    # What ms-swift does to a dataset column on its way to the rewards: deep copies, pickles across ranks.
    assert pickle.loads(pickle.dumps(TRUTH)) == copy.deepcopy(TRUTH) == TRUTH
    assert [o.kind for o in TRUTH.objects] == ["bbox_2d", "quad"]
    with pytest.raises(ValueError, match="does not parse"):
        truth_from_answer('[{"bbox_2d": [1, 2')


# ---------------------------------------------------------------------------- ignore regions

CROWD = PredictedObject(kind="bbox_2d", points=(600.0, 100.0, 900.0, 400.0), desc="cat")  # a crowd of cats
ILLEGIBLE = PredictedObject(kind="quad", points=(100.0, 600.0, 300.0, 600.0, 300.0, 900.0, 100.0, 900.0), desc="")
WITH_IGNORE = GroundTruth(TRUTH.objects, (CROWD, ILLEGIBLE))
ON_CROWD = {"bbox_2d": [650, 150, 850, 350], "label": "cat"}  # wholly inside the crowd region


@pytest.mark.parametrize(("extra", "aside"), [
    (ON_CROWD, True),
    ({**ON_CROWD, "label": "dog"}, False),  # the crowd region is of cats: a dog there is a false positive
    ({"bbox_2d": [120, 620, 280, 880], "label": "anything"}, True),  # a region without desc covers every label
    ({"bbox_2d": [750, 100, 1050, 400], "label": "cat"}, True),  # half of its own area inside: COCOeval's 0.5
    ({"bbox_2d": [800, 100, 1100, 400], "label": "cat"}, False),  # a third inside
])
def test_a_prediction_on_an_ignore_region_is_neither_rewarded_nor_punished(extra, aside):
    got = rewards(answer(CAT, SIGN, extra), WITH_IGNORE)
    without = rewards(answer(CAT, SIGN, extra))  # the same answer where nothing is ignored
    assert without == dict(grounding_format=1, grounding_f1=0.8, grounding_iou=1, grounding_duplicates=0,
                           grounding_count=-0.5, grounding_ap50=1)
    if aside:
        assert got == rewards(answer(CAT, SIGN), WITH_IGNORE) == rewards(answer(CAT, SIGN))
    else:
        assert got == without


def test_a_true_object_is_matched_before_ignore_regions_and_an_image_of_only_ignore_regions():
    # the true cat overlaps nothing ignored; a second cat truth inside the crowd is matched, not set aside
    inside = PredictedObject(kind="bbox_2d", points=(650.0, 150.0, 850.0, 350.0), desc="cat")
    truth = GroundTruth((*TRUTH.objects, inside), (CROWD,))
    assert rewards(answer(CAT, SIGN, ON_CROWD), truth)["grounding_f1"] == 1
    assert rewards(answer(CAT, SIGN), truth)["grounding_f1"] == 0.8  # missing it is still a miss
    only = GroundTruth((), (CROWD,))
    assert rewards("[]", only)["grounding_f1"] == rewards(answer(ON_CROWD), only)["grounding_f1"] == 1
    assert rewards(answer(CAT), only)["grounding_f1"] == 0


def test_ignore_regions_travel_with_the_truth_from_the_records():
    from src.config.prompts import get_prompt_scheme
    from src.datasets.builders import make_builder
    from src.datasets.contract import GroundingObject, Record, SourceRef

    record = Record(image="/d/a.png", width=200, height=100, source=SourceRef(file="/d/t.jsonl", line=1),
                    objects=(GroundingObject(kind="bbox_2d", points=(20, 10, 60, 30), desc="cat"),
                             GroundingObject(kind="bbox_2d", points=(120, 10, 180, 60), desc="cat", ignore=True),
                             GroundingObject(kind="quad", points=(0, 60, 50, 60, 50, 100, 0, 100), desc="",
                                             ignore=True)))
    builder = make_builder(get_prompt_scheme("dense"), "norm1000", "reading")
    answer_text = builder.build([record])["messages"][-1]["content"]
    truth = truth_for([record], builder.codec)
    assert json.loads(answer_text) == [{"bbox_2d": [100, 100, 300, 300], "label": "cat"}]
    assert truth == truth_from_answer(answer_text, truth.ignore)  # the codec's objects are what the answer says
    assert truth.ignore == (PredictedObject(kind="bbox_2d", points=(600.0, 100.0, 900.0, 600.0), desc="cat",
                                            ignore=True),
                            PredictedObject(kind="quad", points=(0.0, 600.0, 250.0, 600.0, 250.0, 1000.0, 0.0, 1000.0),
                                            desc="", ignore=True))
    assert pickle.loads(pickle.dumps(truth)) == truth


# ---------------------------------------------------------------------------- hostile completions

QUAD_TRUTH = GroundTruth((PredictedObject(kind="quad", points=(500.0, 500.0, 700.0, 500.0, 700.0, 700.0, 500.0, 700.0),
                                          desc="sign"),), (CROWD,), (1000.0, 1000.0))


@pytest.mark.parametrize("completion", [
    '[{"quad": [NaN, 500, 700, 500, 700, 700, 500, 700], "label": "sign"}]',  # Python's json reads NaN
    '[{"quad": [500, 500, Infinity, 500, 700, 700, 500, 700], "label": "sign"}]',
    '[{"bbox_2d": [600, 100, 1e400, 400], "label": "cat"}]',  # 1e400 reads as inf
    '[{"bbox_2d": [600, 100, ' + "9" * 5000 + ', 400], "label": "cat"}]',  # past int()'s 4300 digits: ValueError
    "[" * 3000,  # a degenerate repetition: json's recursion limit
    '[{"quad": ' + "[" * 2000 + "]" * 2000 + ', "label": "sign"}]',
])
def test_a_hostile_completion_earns_nothing_and_never_raises(completion):
    # A reward that raises stops the GRPO step; junk must earn what any unreadable answer earns.
    for truth in (QUAD_TRUTH, TRUTH):
        got = rewards(completion, truth)
        assert got == dict(grounding_format=0, grounding_f1=0, grounding_iou=0, grounding_duplicates=0,
                           grounding_count=-1, grounding_ap50=0), truth


def test_a_non_finite_object_beside_good_ones_is_dropped_and_the_answer_is_not_well_formed():
    nan_cat = '{"bbox_2d": [NaN, 100, 300, 300], "label": "cat"}'
    completion = f"[{nan_cat}, {answer(SIGN)[1:-1]}]"
    assert rewards(completion) == dict(grounding_format=0, grounding_f1=round(2 / 3, 6), grounding_iou=1,
                                       grounding_duplicates=0, grounding_count=-0.5, grounding_ap50=0.5)


@pytest.mark.parametrize("completion", ["[]]]]]", "[] I am not sure, maybe a cat at the top", "Sure! Here it is: []"])
def test_an_empty_list_in_junk_is_not_the_well_formed_empty_answer(completion):
    # The spec: for an image without objects F1, IoU and AP50 are 1 for a well-formed `[]`, 0 for anything else.
    nothing = truth_from_answer("[]")
    assert rewards(completion, nothing) == dict(grounding_format=0, grounding_f1=0, grounding_iou=0,
                                                grounding_duplicates=0, grounding_count=0, grounding_ap50=0)
    assert rewards("```json\n[]\n```", nothing)["grounding_f1"] == 1  # fences are the format, not junk
