"""Typed prediction lines (what the evaluation during training hands over, straight from the inference engine)
are held to the same rules as their JSON form: an object no reading would keep is dropped and counted."""

from __future__ import annotations

import json

import pytest

from src.datasets.contract import GroundingObject, Record, SourceRef
from src.evaluation.metrics import evaluate
from src.inference.predictions import PredictedObject, PredictionLine

SQUARE = (20.0, 20.0, 80.0, 20.0, 80.0, 80.0, 20.0, 80.0)
RECORD = Record(image="/d/a.png", width=100, height=100, source=SourceRef(file="/d/gt.jsonl", line=1),
                objects=(GroundingObject(kind="quad", points=SQUARE, desc="sign"),))


def test_a_typed_line_with_a_non_finite_object_scores_as_its_json_form():
    # The engine keeps what the answer parser read, and Python's json reads NaN and Infinity.
    bad = [PredictedObject(kind="quad", points=(float("nan"), *SQUARE[1:]), desc="sign", score=0.9),
           PredictedObject(kind="bbox_2d", points=(20.0, 20.0, float("inf"), 80.0), desc="sign", score=0.8)]
    good = PredictedObject(kind="quad", points=SQUARE, desc="sign", score=0.5)
    line = PredictionLine(source="/d/gt.jsonl:1", image="/d/a.png", width=100, height=100, objects=[*bad, good])
    typed = evaluate([line], [RECORD])
    as_json = evaluate([PredictionLine.from_json(json.loads(json.dumps(line.to_json())))], [RECORD])
    assert typed["invalid_pred_objects"] == as_json["invalid_pred_objects"] == 2
    assert typed["n_pred_objects"] == 1 and typed["class_agnostic"]["AP"] == pytest.approx(1.0)
    typed.pop("n_pred_rows"), as_json.pop("n_pred_rows")
    assert typed == as_json
