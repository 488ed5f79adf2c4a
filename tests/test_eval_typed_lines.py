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


def test_a_repeated_prediction_line_never_takes_the_line_of_another_record_of_its_image():
    # Two records of one image (two annotation passes); the prediction file holds A's line twice (a resumed or
    # concatenated run), then B's. B's line must pair with B; A's second line is the duplicate.
    from src.evaluation.metrics import pair_predictions

    records = [Record(image="/d/a.png", width=100, height=100, source=SourceRef(file="/d/gt.jsonl", line=n),
                      objects=()) for n in (1, 2)]
    row_a, row_a_again, row_b = ({"source": f"/d/gt.jsonl:{n}", "image": "/d/a.png", "objects": []} for n in (1, 1, 2))
    paired, unpaired = pair_predictions([row_a, row_a_again, row_b], records)
    assert paired[0] is row_a and paired[1] is row_b
    assert unpaired["duplicates"] == ["/d/a.png"]
    # A line naming no record of the image (another file's source) takes a record its own line does not claim.
    stray = {"source": "/elsewhere.jsonl:7", "image": "/d/a.png", "objects": []}
    paired, unpaired = pair_predictions([stray, row_a], records)
    assert paired[0] is row_a and paired[1] is stray and unpaired["duplicates"] == []


def test_two_coco_categories_with_one_id_are_noted_not_renamed_silently():
    from pathlib import Path

    from src.evaluation.coco_files import records_from_coco

    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0}]}
    gt = records_from_coco(coco, Path("/d/instances.json"))
    assert any("categories[1]" in n and "id 1" in n and "'cat'" in n for n in gt.notes), gt.notes
    assert gt.records[0].objects[0].desc == "dog"  # the later one, as pycocotools reads it and the note says


def test_a_typed_line_with_a_non_finite_score_scores_as_its_json_form():
    # A diverged model's log-probabilities give NaN scores; read back from JSON such a score is missing (1.0).
    near = (22.0, 20.0, 82.0, 20.0, 82.0, 80.0, 22.0, 80.0)
    objects = [PredictedObject(kind="quad", points=near, desc="sign", score=0.9),
               PredictedObject(kind="quad", points=SQUARE, desc="sign", score=float("nan"))]
    line = PredictionLine(source="/d/gt.jsonl:1", image="/d/a.png", width=100, height=100, objects=objects)
    typed = evaluate([line], [RECORD])
    as_json = evaluate([PredictionLine.from_json(json.loads(json.dumps(line.to_json())))], [RECORD])
    assert typed["scores_missing"] == as_json["scores_missing"] == 1
    typed.pop("n_pred_rows"), as_json.pop("n_pred_rows")
    assert typed == as_json
