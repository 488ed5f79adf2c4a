"""Answers a model may really write, read back without a crash and without a wrong object or score
(src/datasets/answer.py, src/datasets/kinds/base.py read_values, src/inference/scoring.py)."""

import json
import math

import pytest

from src.datasets.answer import parse_answer
from src.datasets.builders.codec import AnswerCodec, read_answer
from src.inference.predictions import PredictionLine
from src.inference.scoring import object_scores

CAT = '{"bbox_2d": [100, 200, 300, 400], "label": "cat"}'
DOG = '{"bbox_2d": [500, 600, 700, 800], "label": "dog"}'


@pytest.mark.parametrize("text", [
    "[" * 100_000,  # a degenerate generation: nesting past json's recursion limit
    f'[{CAT}, {{"bbox_2d": [1, 2, 3, 4], "label": ' + "[" * 5000 + "]" * 5000 + "}]",
    '[{"bbox_2d": [1, 2, ' + "9" * 5000 + ', 4], "label": "cat"}]',  # past int()'s 4300-digit limit
])
def test_an_unreadable_answer_is_counted_never_raised(text):
    parsed = parse_answer(text)  # the inference engine calls this unguarded: a raise lost every prediction
    assert parsed.error and parsed.bad_entries == 1
    assert [o["label"] for o in parsed.objects] == (["cat"] if text.startswith(f"[{CAT}") else [])


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_non_finite_coordinate_is_a_bad_entry_not_an_object(value):
    text = f'[{{"point_2d": [{value}, 200], "label": "cat"}}, {DOG}]'
    parsed, found = read_answer(text)
    assert parsed.bad_entries == 1 and parsed.error
    assert [o.desc for o in found] == ["dog"]
    # what inference writes for it is strict JSON
    line = PredictionLine(source="a.jsonl:1", image="a.png", width=640, height=480,
                          objects=AnswerCodec("norm1000").to_pixels(list(found), 640, 480))
    json.loads(json.dumps(line.to_json()), parse_constant=lambda c: pytest.fail(f"{c} in a prediction line"))


def test_prose_with_brackets_before_the_list_loses_nothing():
    parsed = parse_answer(f"The objects [every one of them] are: [{CAT}, {DOG}]")
    assert [o["label"] for o in parsed.objects] == ["cat", "dog"]
    assert parsed.error is None and not parsed.truncated and parsed.junk_chars > 0


def test_one_entry_written_without_its_list_is_read():
    parsed = parse_answer(CAT)
    assert [(o["label"], o["coords"]) for o in parsed.objects] == [("cat", [100.0, 200.0, 300.0, 400.0])]
    assert parsed.error is None and parsed.bad_entries == 0


def test_a_null_label_is_empty_and_a_boolean_image_names_none():
    parsed = parse_answer('[{"image": true, "bbox_2d": [1, 2, 3, 4], "label": null}]')
    assert parsed.objects == [{"kind": "bbox_2d", "coords": [1.0, 2.0, 3.0, 4.0], "label": ""}]


def _tokens(pieces):
    return "".join(t for t, _ in pieces), [t for t, _ in pieces], [lp for _, lp in pieces]


def test_a_truncated_answer_keeps_a_score_per_object():
    """Dense answers are often cut by max_new_tokens: the cut-off tail is no object, and no reason to give
    every object the same score (AP could not rank them)."""
    text, tokens, logprobs = _tokens([("[", 0.0), (CAT, math.log(0.9)), (", ", math.log(0.9)), (DOG, math.log(0.2)),
                                      (", ", math.log(0.2)), ('{"bbox_2d": [1', math.log(0.5))])
    parsed = parse_answer(text)
    assert parsed.truncated and len(parsed.objects) == 2
    assert object_scores(text, tokens, logprobs, 2) == pytest.approx([0.9, 0.2])


def test_a_malformed_entry_between_two_objects_keeps_their_own_scores():
    bad = '{"bbox_2d": [1, 2, 3], "label": "x"}'
    text, tokens, logprobs = _tokens([("[", 0.0), (CAT, math.log(0.9)), (", ", math.log(0.9)), (bad, math.log(0.1)),
                                      (", ", math.log(0.1)), (DOG, math.log(0.2)), ("]", math.log(0.2))])
    assert parse_answer(text).bad_entries == 1
    assert object_scores(text, tokens, logprobs, 2) == pytest.approx([0.9, 0.2])


@pytest.mark.parametrize("label", ["polygon", "quad", "point_2d"])
def test_a_label_spelled_like_a_kind_key_does_not_shift_the_scores(label):
    cat = CAT.replace('"cat"', f'"{label}"')
    text, tokens, logprobs = _tokens([("[", 0.0), (cat, math.log(0.9)), (", ", math.log(0.9)), (DOG, math.log(0.2)),
                                      ("]", math.log(0.2))])
    assert object_scores(text, tokens, logprobs, 2) == pytest.approx([0.9, 0.2])


def test_legacy_spans_score_each_box_and_skip_the_cut_off_tail():
    box = "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|>"
    text, tokens, logprobs = _tokens([(box, math.log(0.8)), (box.replace("cat", "dog"), math.log(0.3)),
                                      ("<|box_start|>(5,", math.log(0.1))])
    parsed = parse_answer(text)
    assert parsed.truncated and len(parsed.objects) == 2
    # the ref right before a box is the object's (its label); the cut-off tail is no object's
    assert object_scores(text, tokens, logprobs, 2) == pytest.approx([0.8, 0.3])
