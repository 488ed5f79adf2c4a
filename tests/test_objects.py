"""The object record (src/datasets/objects.py) and the answer codec (src/datasets/builders/codec.py): one type for
ground truth, predictions, answers and rewards, written and read back without a JSON round trip in between."""

from __future__ import annotations

import ast
import copy
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from src.config.prompts import get_prompt_scheme
from src.datasets.builders import AnswerCodec, make_builder, parsed_objects, read_answer, row_geometry
from src.datasets.contract import GroundingObject, Record, SourceRef
from src.datasets.objects import GeoObject, read_objects
from src.evaluation.metrics import evaluate, gt_objects
from src.inference.predictions import PredictedObject, PredictionLine
from src.rewards.grounding import GroundTruth, truth_for, truth_from_answer

SRC = Path(__file__).resolve().parents[1] / "src"


def _record(name: str, width: int, height: int, *objects: GroundingObject) -> Record:
    return Record(image=f"/d/{name}.png", width=width, height=height, summary=None,
                  source=SourceRef(file="/d/t.jsonl", line=len(name)), objects=objects)


CAT = GroundingObject(kind="bbox_2d", points=(20.0, 10.0, 60.0, 30.0), desc="cat")
SIGN = GroundingObject(kind="quad", points=(100.0, 10.0, 180.0, 12.0, 178.0, 60.0, 98.0, 58.0), desc="sign")
DOT = GroundingObject(kind="point_2d", points=(33.3, 71.7), desc="dot")
LEAF = GroundingObject(kind="polygon", points=(120.0, 70.0, 160.0, 75.0, 150.0, 95.0, 125.0, 90.0, 118.0, 80.0),
                       desc="leaf")
CROWD = GroundingObject(kind="bbox_2d", points=(0.0, 50.0, 40.0, 99.0), desc="cat", ignore=True)
FIRST = _record("first", 200, 100, SIGN, CAT, DOT, LEAF, CROWD)
SECOND = _record("second", 640, 480, GroundingObject(kind="bbox_2d", points=(64.0, 48.0, 320.0, 240.0), desc="cat"))


def test_a_record_object_is_the_object_record_that_predictions_and_rewards_use():
    assert isinstance(CAT, GeoObject) and PredictedObject is GeoObject
    assert gt_objects(FIRST)[0] == list(FIRST.objects)  # handed over as they are, no copy into another shape
    with pytest.raises(ValueError, match="only on an ignore region"):  # the contract's rules stay the record's
        GroundingObject(kind="bbox_2d", points=(0, 0, 1, 1), desc="")


def test_the_json_form_reads_back_equal_and_counts_what_it_drops():
    objects = [GeoObject("quad", (1.0, 2.0, 9.0, 2.0, 9.0, 8.0, 1.0, 8.0), "t", 0.25),
               GeoObject("point_2d", (3.0, 4.0), "", ignore=True, image=2, category_id=7, supercategory="animal"),
               GeoObject("polygon", (0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 1.0, 5.0), "p")]
    items = json.loads(json.dumps([o.to_json() for o in objects]))
    assert read_objects(items) == (objects, 0, 0)
    assert objects[0].to_json() == {"kind": "quad", "points": [1.0, 2.0, 9.0, 2.0, 9.0, 8.0, 1.0, 8.0], "desc": "t",
                                    "score": 0.25}  # the prediction file's four keys, nothing unset added
    bad = [{"kind": "box", "points": [1, 2, 3, 4]}, {"kind": "bbox_2d", "points": [1, 2, 3]},
           {"kind": "bbox_2d", "points": [1, 2, 3, math.inf]}, {"kind": "polygon", "points": [1, 2, 3, 4]}, 5,
           {"kind": "bbox_2d", "points": [1, 2, 3, 4], "score": "high"}]
    kept, invalid, no_score = read_objects(bad)
    assert kept == [GeoObject("bbox_2d", (1.0, 2.0, 3.0, 4.0), "")] and (invalid, no_score) == (5, 1)
    assert read_objects({"objects": []}) == ([], 0, 0)
    # A null desc is no desc, as the answer parser reads a null label (it read as the label "None").
    assert read_objects([{"kind": "point_2d", "points": [1, 2], "desc": None}])[0][0].desc == ""


@pytest.mark.parametrize("norm", ["norm1000", "none"])
def test_the_codec_writes_what_it_says_the_answer_holds(norm):
    codec = AnswerCodec(norm, "reading")
    for images in ([FIRST], [FIRST, SECOND]):
        text = codec.write(images)
        parsed, found = read_answer(text)
        assert parsed.error is None and found == tuple(codec.answer_objects(images))
        assert [o.kind for o in found if o.image in (None, 1)] == ["bbox_2d", "quad", "polygon", "point_2d"]
        assert all(type(v) is int for o in codec.answer_objects(images) for v in o.points)  # the grid's, as written
        assert {o.image for o in found} == ({None} if len(images) == 1 else {1, 2})
    regions = codec.ignore_objects([FIRST])
    assert [(o.kind, o.ignore, o.desc) for o in regions] == [("bbox_2d", True, "cat")]
    assert "ignore" not in codec.write([FIRST]) and len(codec.answer_objects([FIRST])) == 4


def test_the_codec_reads_answers_back_to_pixels_within_half_a_grid_cell():
    codec = AnswerCodec("norm1000", "given")
    back = codec.to_pixels(codec.answer_objects([FIRST]), FIRST.width, FIRST.height)
    for original, read in zip([o for o in FIRST.objects if not o.ignore], back, strict=True):
        assert (read.kind, read.desc) == (original.kind, original.desc)
        cell = np.tile([FIRST.width / 1000, FIRST.height / 1000], len(original.points) // 2)
        assert np.all(np.abs(np.subtract(read.points, original.points)) <= cell / 2 + 1e-9)
    assert codec.space_size([FIRST]) == (1000.0, 1000.0)
    assert AnswerCodec("none").space_size([FIRST]) == (200.0, 100.0)
    assert AnswerCodec("none").space_size([FIRST, SECOND]) is None  # pixel answers about images of two sizes


def test_the_builder_answers_with_its_codec_and_the_row_geometry_reads_back():
    builder = make_builder(get_prompt_scheme("dense"), "norm1000", "reading")
    row = builder.build([FIRST, SECOND])
    assert row["messages"][-1]["content"] == builder.codec.write([FIRST, SECOND])
    geometry = row_geometry(row)
    assert [(g.image, g.width, g.height) for g in geometry] == [(1, 200, 100), (2, 640, 480)]
    assert builder.codec.answer_objects(geometry) == builder.codec.answer_objects([FIRST, SECOND])


def test_the_truth_of_a_prompt_comes_from_its_records_through_the_codec():
    builder = make_builder(get_prompt_scheme("dense"), "norm1000", "reading")
    truth = truth_for([FIRST], builder.codec)
    answer = builder.build([FIRST])["messages"][-1]["content"]
    assert truth == truth_from_answer(answer, truth.ignore)  # what the answer text says, without reading it
    assert [o.kind for o in truth.ignore] == ["bbox_2d"] and truth.size == (1000.0, 1000.0)
    assert pickle.loads(pickle.dumps(truth)) == copy.deepcopy(truth) == truth
    assert isinstance(truth, GroundTruth)


@pytest.mark.slow  # imports ms-swift and torch (about 13 s)
def test_grpo_rows_carry_the_truth_object(tmp_path):
    from dataclasses import replace

    from PIL import Image

    from src.training.grpo import TRUTH_COLUMN, PromptRows

    Image.new("RGB", (FIRST.width, FIRST.height)).save(tmp_path / "first.png")
    record = replace(FIRST, image=str(tmp_path / "first.png"))
    builder = make_builder(get_prompt_scheme("grounding"), "norm1000", "reading")  # one question per desc
    rows = PromptRows([([record], focus) for focus in builder.focuses([record])], builder)
    cats = next(rows[i] for i in range(len(rows)) if '"cat"' in rows[i]["solution"])
    truth = cats[TRUTH_COLUMN]
    assert isinstance(truth, GroundTruth) and [o.desc for o in truth.objects] == ["cat"]
    assert truth == truth_from_answer(cats["solution"], truth.ignore)
    assert [o.desc for o in truth.ignore] == ["cat"]  # the crowd of cats, asked about cats

    # ms-swift's own path of a dataset column to the rewards: a sample deep-copied from the row, its reward row,
    # batched, pickled across ranks; with vllm_server_pass_dataset, sent to the rollout server as JSON.
    from dataclasses import asdict

    from swift.dataset import RowPreprocessor
    from swift.rewards import orms
    from swift.rl_core.data import GRPOSample

    from src.training.grpo import register_rewards

    sample = pickle.loads(pickle.dumps(GRPOSample.from_row(cats)))
    batched = RowPreprocessor.rows_to_batched([sample.to_reward_row()])
    assert batched[TRUTH_COLUMN] == [truth]
    register_rewards()
    assert orms["grounding_f1"]()([cats["solution"], "[]"], **{TRUTH_COLUMN: [truth, truth]}) == [1.0, 0.0]
    sent = json.loads(json.dumps(asdict(sample.to_infer_request(include_extra=True))))
    assert len(sent["data_dict"][TRUTH_COLUMN]["objects"]) == 1


def test_evaluation_takes_prediction_lines_as_they_are():
    lines = [PredictionLine(source=str(FIRST.source), image=FIRST.image, objects=[
        GeoObject("bbox_2d", (21.0, 10.0, 60.0, 31.0), "cat", 0.9),
        GeoObject("quad", SIGN.points, "sign", 0.8), GeoObject("bbox_2d", (5.0, 60.0, 30.0, 90.0), "cat", 0.7)])]
    records = [FIRST, SECOND]  # the second has no prediction line
    typed = evaluate(lines, records)
    assert typed == evaluate([line.to_json() for line in lines], records)
    assert typed["missing_predictions"] == [str(SECOND.source)] and typed["ignored_pred_objects"] == 1
    assert list(typed)[:8] == ["n_records", "n_pred_rows", "iou_type", "max_dets", "parse_failures",
                               "parse_failure_rate", "missing_predictions", "unpaired_rows"]


def test_a_box_with_swapped_corners_is_malformed_wherever_it_is_read():
    # Before: [60, 30, 20, 10] (CAT swapped) scored IoU 0 against a box but 1 against the equal quad, by polygon
    # IoU and for a point inside it: now dropped and counted as malformed, like a box of 3 values.
    swapped = [60.0, 30.0, 20.0, 10.0]
    quad = (20.0, 10.0, 60.0, 10.0, 60.0, 30.0, 20.0, 30.0)
    gt = _record("q", 200, 100, GroundingObject(kind="quad", points=quad, desc="cat"))
    row = {"source": str(gt.source), "image": gt.image, "parse_error": None,
           "objects": [{"kind": "bbox_2d", "points": swapped, "desc": "cat", "score": 0.9}]}
    for iou_type in ("auto", "polygon", "bbox"):
        m = evaluate([row], [gt], iou_type=iou_type)
        assert m["invalid_pred_objects"] == 1 and m["class_agnostic"]["tp"] == 0, iou_type
    point = _record("p", 200, 100, GroundingObject(kind="point_2d", points=(40.0, 20.0), desc="cat"))
    assert evaluate([{**row, "source": str(point.source), "image": point.image}], [point])["class_agnostic"]["tp"] == 0
    for values in (swapped, [20.0, 30.0, 60.0, 10.0]):  # x2 < x1; y2 < y1
        assert read_objects([{"kind": "bbox_2d", "points": values}]) == ([], 1, 0)
        parsed, found = read_answer(json.dumps([{"bbox_2d": values, "label": "cat"}]))
        assert found == () and parsed.bad_entries == 1 and "without a valid" in parsed.error
    # a zero-size box is no swap: read, and scored (a false positive, as COCO counts it)
    assert read_objects([{"kind": "bbox_2d", "points": [5, 5, 5, 9]}])[1] == 0
    assert read_answer('[{"bbox_2d": [5, 5, 5, 9]}]')[0].bad_entries == 0


def test_parsed_objects_keep_the_image_an_entry_names():
    parsed, found = read_answer('[{"image": 2, "bbox_2d": [1, 2, 3, 4], "label": "a"}, {"point_2d": [5, 6]}]')
    assert found == parsed_objects(parsed) == (GeoObject("bbox_2d", (1.0, 2.0, 3.0, 4.0), "a", image=2),
                                               GeoObject("point_2d", (5.0, 6.0), ""))


def test_metrics_no_longer_import_the_inference_layer():
    tree = ast.parse((SRC / "evaluation" / "metrics.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.startswith("src.inference") for m in imported), imported
