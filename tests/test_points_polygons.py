"""Points (`point_2d`) and polygons, end to end on CPU without a model: the training answer and its way back
to pixels, evaluation (the documented point rule: P/R/F1 and AP by the same machinery), pictures, and the
GRPO rewards. Training, render and inference on them run in tests/test_learning_proof.py (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.datasets.builders.codec import AnswerCodec, read_answer
from src.datasets.contract import GroundingObject, Record, SourceRef
from src.datasets.synth import write_synthetic_dataset
from src.datasets.validation import load_records
from src.evaluation.metrics import evaluate
from src.evaluation.pictures import GREEN, RED, render_record
from src.rewards.grounding import REWARDS, truth_from_answer

GT_FILE = "/data/gt.jsonl"
TRIANGLE = [20.0, 120.0, 80.0, 120.0, 50.0, 180.0]


def _record(objects, image: str = "/data/img0.png", width: int = 200, height: int = 200) -> Record:
    return Record(image=image, width=width, height=height,
                  objects=tuple(GroundingObject(kind=k, points=tuple(p), desc=d) for k, p, d in objects),
                  source=SourceRef(file=GT_FILE, line=1))


GT = [("point_2d", [50.0, 50.0], "dot"), ("point_2d", [150.0, 150.0], "dot"),
      ("polygon", TRIANGLE, "leaf"), ("bbox_2d", [100.0, 10.0, 140.0, 40.0], "car")]


def _row(objects, image: str = "/data/img0.png") -> dict:
    return {"source": f"{GT_FILE}:1", "image": image, "width": 200, "height": 200, "raw": "", "parse_error": None,
            "objects": [{"kind": k, "points": p, "desc": d, "score": s} for k, p, d, s in objects]}


def test_points_and_polygons_are_matched_by_the_documented_rule():
    preds = [("point_2d", [55.0, 50.0], "dot", 0.9),     # 5 px = 0.025 image sizes from a GT point: 0.75
             ("polygon", list(reversed_pairs(TRIANGLE)), "leaf", 0.85),  # the same triangle: IoU 1
             ("point_2d", [150.0, 170.0], "dot", 0.8),   # 20 px = 0.1 image sizes: 0, a false positive
             ("point_2d", [120.0, 20.0], "car", 0.7)]    # inside the GT box: 1
    m = evaluate([_row(preds)], [_record(GT)])
    agnostic = m["class_agnostic"]
    assert (agnostic["tp"], agnostic["fp"], agnostic["fn"]) == (3, 1, 1)
    assert (agnostic["precision"], agnostic["recall"], agnostic["f1"]) == (0.75, 0.75, 0.75)
    # Ranked by score: TP, TP, FP, TP of 4 GT; COCO's 101-point precision: 1.0 up to recall 0.5, 0.75 to 0.75.
    assert agnostic["AP50"] == pytest.approx((51 + 25 * 0.75) / 101)
    assert m["mean_over_descs"]["f1"] == 0.75 and m["per_desc"]["leaf"]["AP"] == pytest.approx(1.0)


def reversed_pairs(values):
    pts = np.asarray(values).reshape(-1, 2)[::-1]
    return pts.reshape(-1).tolist()


def test_point_distance_is_relative_to_the_image_size():
    # The same 12 px: 0.06 of a 200 px image (similarity 0.4, no match), 0.03 of a 400 px one (0.7, a match).
    small = evaluate([_row([("point_2d", [62.0, 50.0], "dot", 1.0)])], [_record(GT[:1])])
    wide = _record([("point_2d", [50.0, 50.0], "dot")], width=400, height=400)
    large = evaluate([{**_row([("point_2d", [62.0, 50.0], "dot", 1.0)]), "width": 400, "height": 400}], [wide])
    assert small["class_agnostic"]["tp"] == 0 and large["class_agnostic"]["tp"] == 1


def test_an_ignore_polygon_sets_a_point_on_it_aside():
    gt = Record(image="/data/img0.png", width=200, height=200, source=SourceRef(file=GT_FILE, line=1), objects=(
        GroundingObject(kind="point_2d", points=(50.0, 50.0), desc="dot"),
        GroundingObject(kind="polygon", points=tuple(TRIANGLE), desc="", ignore=True)))
    m = evaluate([_row([("point_2d", [50.0, 50.0], "dot", 0.9), ("point_2d", [50.0, 150.0], "dot", 0.8)])], [gt])
    assert m["ignored_pred_objects"] == 1 and m["class_agnostic"]["fp"] == 0 and m["class_agnostic"]["tp"] == 1


def test_the_answer_holds_points_and_polygons_on_the_grid_and_reads_back_to_pixels():
    record = _record(GT)
    codec = AnswerCodec("norm1000", "reading")
    text = codec.write([record])
    assert '{"point_2d": [250, 250], "label": "dot"}' in text
    assert '{"polygon": [100, 600, 400, 600, 250, 900], "label": "leaf"}' in text
    parsed, objects = read_answer(text)
    assert parsed.error is None and len(objects) == 4
    back = {o.desc + str(o.kind): o.points for o in codec.to_pixels(list(objects), 200, 200)}
    assert back["leafpolygon"] == tuple(TRIANGLE) and back["dotpoint_2d"] in ((50.0, 50.0), (150.0, 150.0))


def test_the_rewards_score_points_and_polygons():
    truth = truth_from_answer('[{"point_2d": [250, 250], "label": "dot"}, '
                              '{"polygon": [100, 600, 400, 600, 250, 900], "label": "leaf"}]')
    near = '[{"point_2d": [260, 250], "label": "dot"}, {"polygon": [100, 600, 400, 600, 250, 900], "label": "leaf"}]'
    far = '[{"point_2d": [450, 250], "label": "dot"}]'
    assert REWARDS["grounding_format"](near, truth) == 1.0
    assert REWARDS["grounding_f1"](near, truth) == 1.0  # 10 of 1000: similarity 0.9
    assert REWARDS["grounding_iou"](near, truth) == pytest.approx((0.9 + 1.0) / 2)
    assert REWARDS["grounding_f1"](far, truth) == 0.0
    assert REWARDS["grounding_ap50"](near, truth) == pytest.approx(1.0)


def test_pictures_draw_points_and_polygons_coloured_by_their_match(tmp_path: Path):
    image = tmp_path / "img0.png"
    Image.new("RGB", (400, 400), (128, 128, 128)).save(image)
    record = _record(GT, image=str(image), width=400, height=400)
    preds = _row([("point_2d", [50.0, 50.0], "dot", 0.9), ("polygon", [300, 300, 380, 300, 340, 380], "leaf", 0.5)],
                 image=str(image))
    picture, n_gt, tp, on_ignore = render_record(record, preds, True, min_side=400)
    assert (n_gt, tp, on_ignore) == (4, 1, 0)
    pixels = np.asarray(picture)
    assert tuple(pixels[50, 50]) == GREEN  # the matched point, drawn as a filled dot on it
    assert tuple(pixels[300, 340]) == RED  # the false-positive polygon's top edge


def test_the_synthetic_set_with_every_kind_validates(tmp_path: Path):
    result = write_synthetic_dataset(tmp_path / "d", n=5, val_fraction=0.2, every_kind=True)
    records, problems = load_records(result["train"])
    assert problems == [] and set(result["objects_by_kind"]) == {"bbox_2d", "quad", "point_2d", "polygon"}
    assert {o.kind for r in records for o in r.objects} == {"bbox_2d", "quad", "point_2d", "polygon"}
    # without every_kind the set is what it always was
    classic = write_synthetic_dataset(tmp_path / "c", n=5, val_fraction=0.2)
    assert set(classic["objects_by_kind"]) == {"bbox_2d", "quad"}


def test_coco_results_write_polygons_and_points_as_boxes_and_count_them():
    from src.datasets.objects import GeoObject
    from src.evaluation.coco_files import coco_results
    from src.inference.predictions import PredictionLine

    line = PredictionLine(source=f"{GT_FILE}:1", image="/data/img0.png", width=200, height=200, objects=[
        GeoObject("polygon", tuple(TRIANGLE), "leaf", 0.5), GeoObject("point_2d", (5.0, 6.0), "dot", 0.25),
        GeoObject("bbox_2d", (1.0, 2.0, 3.0, 5.0), "car", 1.0)])
    results, counts = coco_results([line], [7], {"leaf": 1, "dot": 2, "car": 3})
    assert [r["bbox"] for r in results] == [[20.0, 120.0, 60.0, 60.0], [5.0, 6.0, 0.0, 0.0], [1.0, 2.0, 2.0, 3.0]]
    assert counts == {"polygon as bbox": 1, "point_2d as bbox": 1}


def test_stats_count_objects_by_kind():
    from src.datasets.render import dataset_stats

    ignored = Record(image="/data/img1.png", width=200, height=200, source=SourceRef(file=GT_FILE, line=2), objects=(
        GroundingObject(kind="polygon", points=tuple(TRIANGLE), desc="", ignore=True),))
    result = dataset_stats([_record(GT), ignored], [10, 12], None)
    assert result["objects_by_kind"] == {"bbox_2d": 1, "quad": 0, "point_2d": 2, "polygon": 1}
    assert result["objects"] == 4 and result["ignore_regions"] == 1


def test_augmentation_moves_points_and_polygons_with_the_pixels():
    from src.datasets.augment import augment, parse_augment_ops

    record = _record([("point_2d", [10.0, 20.0], "dot"), ("polygon", TRIANGLE, "leaf")], width=200, height=200)
    image = Image.new("RGB", (200, 200), (128, 128, 128))
    rng = np.random.default_rng(0)
    _, flipped, report = augment(image, record, parse_augment_ops([{"op": "hflip", "p": 1.0}]), rng)
    assert report["applied"] == [{"op": "hflip"}]
    # x -> 200 - x; the triangle, mirrored, is stored clockwise from its top-left-most vertex again
    assert [(o.kind, o.points) for o in flipped.objects] == [
        ("point_2d", (190.0, 20.0)), ("polygon", (120.0, 120.0, 180.0, 120.0, 150.0, 180.0))]
    # a crop window that leaves the point outside drops it (a point has no area to keep visible)
    ops = parse_augment_ops([{"op": "scale_crop", "p": 1.0, "min_scale": 0.5, "max_scale": 0.5,
                              "min_visibility": 0.1}])
    kept = dropped = 0
    for seed in range(20):
        _, out, report = augment(image, record, ops, np.random.default_rng(seed))
        assert all(0 <= v <= 200 for o in out.objects for v in o.points)
        kept += sum(o.kind == "point_2d" for o in out.objects)
        dropped += report["dropped_by_reason"].get("low_visibility", 0)
    assert kept > 0 and dropped > 0
