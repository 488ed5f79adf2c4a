"""src.eval against pycocotools on COCO files: published numbers, crowd regions, ties, string/int ids, COCO
results in (against COCO or JSONL ground truth) and out, and the refusals of inputs that do not pair."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from src.datasets.contract import GroundingObject, Record, SourceRef
from src.eval import main
from src.evaluation.coco_files import (
    category_ids,
    coco_ids_for,
    coco_results,
    jsonl_image_ids,
    read_json_document,
    records_from_coco,
    rows_from_coco_results,
)
from src.evaluation.inputs import load_ground_truth
from src.evaluation.metrics import Obj, evaluate, match_greedy, pairwise_iou
from src.inference.predictions import PredictedObject, PredictionLine

DATA = Path(__file__).parent / "data"
VAL100 = DATA / "coco_val2014_100" / "instances_val2014_100_bbox.json"
FAKE100 = DATA / "coco_val2014_100" / "instances_val2014_fakebbox100_results.json"
IGNORE_GT = DATA / "coco_ignore" / "gt_ignore_test.json"
IGNORE_DT = DATA / "coco_ignore" / "dt_ignore_test.json"


# ---------------------------------------------------------------------------- pycocotools reference


def _reference(coco: dict, results: list[dict]):
    """pycocotools' COCOeval (bbox) on the dicts, evaluated and accumulated."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(coco)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _ap3(precision: np.ndarray) -> tuple[float | None, ...]:
    def mean(block):
        valid = block[block > -1]
        return float(valid.mean()) if valid.size else None

    return mean(precision), mean(precision[0]), mean(precision[5])


def _one_class(coco: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    return ({**coco, "annotations": [{**a, "category_id": 1} for a in coco["annotations"]],
             "categories": [{"id": 1, "name": "object"}]}, [{**r, "category_id": 1} for r in results])


def _assert_parity(metrics: dict, coco: dict, results: list[dict], min_categories: int = 2) -> None:
    """Per category, averaged over categories, and class-agnostic: equal to pycocotools to 1e-6."""
    ev = _reference(coco, results)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    checked = 0
    for k, cid in enumerate(ev.params.catIds):
        ref = _ap3(ev.eval["precision"][:, :, k, 0, -1])
        per = metrics["per_desc"].get(names[cid])
        if per is None:  # a category without any ground truth: pycocotools has nothing for it either
            assert ref == (None, None, None)
            continue
        assert (per["AP"], per["AP50"], per["AP75"]) == pytest.approx(ref, abs=1e-6), names[cid]
        checked += ref[0] is not None
    assert checked >= min_categories
    ours = metrics["mean_over_descs"]
    assert (ours["AP"], ours["AP50"], ours["AP75"]) == pytest.approx(tuple(ev.stats[:3]), abs=1e-6)
    agnostic = _reference(*_one_class(coco, results))
    ours = metrics["class_agnostic"]
    assert (ours["AP"], ours["AP50"], ours["AP75"]) == pytest.approx(tuple(agnostic.stats[:3]), abs=1e-6)


def _run_eval(tmp_path: Path, gt: Path, pred: Path, *extra: str) -> tuple[int, dict | None, str]:
    out = tmp_path / f"metrics_{len(list(tmp_path.glob('metrics_*')))}.json"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), *extra])
    return code, (json.loads(out.read_text(encoding="utf-8")) if out.exists() else None), err.getvalue()


# ---------------------------------------------------------------------------- real public files


def test_cocoapi_fake_results_give_the_published_numbers(tmp_path: Path):
    code, metrics, _ = _run_eval(tmp_path, VAL100, FAKE100)
    assert code == 0
    assert metrics["inputs"]["gt_format"] == "coco" and metrics["inputs"]["pred_format"] == "coco_results"
    ours = metrics["mean_over_descs"]
    # cocoapi's published bbox numbers for these files (faster_coco_eval's test, to 10 places)
    assert (ours["AP"], ours["AP50"], ours["AP75"]) == pytest.approx(
        (0.5045806987249628, 0.6969727247299577, 0.5729816669904824), abs=1e-9)
    assert metrics["n_ignore_regions"] == 9 and metrics["n_gt_objects"] == 830
    _assert_parity(metrics, json.loads(VAL100.read_text()), json.loads(FAKE100.read_text()))


def test_crowd_region_and_string_image_id_give_faster_coco_evals_numbers():
    coco = json.loads(IGNORE_GT.read_text())
    results = [d for d in json.loads(IGNORE_DT.read_text()) if d["score"] >= 0.1]  # as its test loads them
    gt = records_from_coco(coco, IGNORE_GT)
    assert gt.image_ids == ["2299"] and "2299 for image \"2299\"" in gt.notes[0]  # 13 annotations say 2299
    read = rows_from_coco_results(results, IGNORE_DT, gt.records, gt.image_ids, gt.categories)
    assert read.n_used == len(results) and read.across_types == len(results)
    metrics = evaluate(read.rows, gt.records, image_ids=gt.image_ids)
    ours = metrics["class_agnostic"]
    assert (ours["AP"], ours["AP50"], ours["AP75"]) == pytest.approx((0.7099009900990099, 1.0, 0.8415841584158416),
                                                                      abs=1e-9)
    assert metrics["ignored_pred_objects"] > 0  # detections on the crowd region are neither TP nor FP
    # pycocotools itself needs one id type; on the ids made consistent it gives the same numbers
    same_ids = {**coco, "annotations": [{**a, "image_id": "2299"} for a in coco["annotations"]]}
    _assert_parity(metrics, same_ids, [{**d, "image_id": "2299"} for d in results], min_categories=1)


# ---------------------------------------------------------------------------- a generated equivalent


def _generated(seed: int, string_ids: bool) -> tuple[dict, list[dict]]:
    """A COCO file and results with the structure of the real ones: crowd regions (with detections on them),
    ids that sort differently from the file order, non-contiguous category ids, small and large boxes,
    images without annotations, scores with one decimal (many ties, within and across images), results
    in shuffled order."""
    rng = np.random.default_rng(seed)
    cat_ids = [3, 7, 11, 12, 18, 25, 40, 41]
    categories = [{"id": c, "name": f"thing{c}", "supercategory": "s"} for c in cat_ids]
    n_images = 24
    raw_ids = rng.permutation(np.arange(5, 5 + 7 * n_images, 7))  # file order is not id order
    ids = [f"im{int(i):04d}" if string_ids else int(i) for i in raw_ids]
    images, annotations, results = [], [], []
    for image_id in ids:
        images.append({"id": image_id, "file_name": f"COCO_{raw_ids[ids.index(image_id)]:012d}.jpg", "width": 640,
                       "height": 480})
        if rng.random() < 0.1:
            continue  # an image without annotations (its detections are all false positives)
        boxes = []
        for _ in range(rng.integers(1, 9)):
            size = rng.choice([rng.uniform(4, 30), rng.uniform(30, 100), rng.uniform(100, 300)])
            w, h = round(size * rng.uniform(0.5, 1.5), 2), round(size * rng.uniform(0.5, 1.5), 2)
            x, y = round(rng.uniform(0, 640 - w), 2), round(rng.uniform(0, 480 - h), 2)
            crowd = int(rng.random() < 0.12)
            cat = int(rng.choice(cat_ids))
            boxes.append((x, y, w, h, cat, crowd))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "bbox": [x, y, w, h], "area": round(w * h, 3), "iscrowd": crowd})
        for x, y, w, h, cat, crowd in boxes:
            for _ in range(rng.integers(0, 4 if crowd else 3)):
                if crowd:  # a part of the crowd region
                    dw, dh = w * rng.uniform(0.2, 0.6), h * rng.uniform(0.2, 0.6)
                    box = [x + rng.uniform(0, w - dw), y + rng.uniform(0, h - dh), dw, dh]
                else:
                    box = [x + rng.normal(0, w / 10), y + rng.normal(0, h / 10), w * rng.uniform(0.8, 1.2),
                           h * rng.uniform(0.8, 1.2)]
                label = cat if rng.random() < 0.85 else int(rng.choice(cat_ids))
                results.append({"image_id": image_id, "category_id": label,
                                "bbox": [round(float(v), 2) for v in box], "score": round(float(rng.random()), 1)})
        for _ in range(rng.integers(0, 3)):  # background
            results.append({"image_id": image_id, "category_id": int(rng.choice(cat_ids)),
                            "bbox": [round(float(rng.uniform(0, 500)), 2), round(float(rng.uniform(0, 400)), 2),
                                     20.5, 30.25], "score": round(float(rng.random()), 1)})
    order = rng.permutation(len(results))
    coco = {"images": images, "annotations": annotations, "categories": categories}
    return coco, [results[i] for i in order]


@pytest.mark.parametrize(("seed", "string_ids"), [(0, False), (1, True), (2, False)])
def test_generated_coco_equals_pycocotools(tmp_path: Path, seed: int, string_ids: bool):
    coco, results = _generated(seed, string_ids)
    assert sum(a["iscrowd"] for a in coco["annotations"]) >= 3
    (tmp_path / "gt.json").write_text(json.dumps(coco, indent=1), encoding="utf-8")  # pretty-printed
    (tmp_path / "res.json").write_text(json.dumps(results), encoding="utf-8")
    code, metrics, _ = _run_eval(tmp_path, tmp_path / "gt.json", tmp_path / "res.json")
    assert code == 0
    assert 0.1 < metrics["mean_over_descs"]["AP"] < 0.9 and metrics["ignored_pred_objects"] > 0
    _assert_parity(metrics, coco, results)


def test_ties_rank_across_images_in_image_id_order():
    coco, results = _generated(0, False)
    gt = records_from_coco(coco, Path("/x/gt.json"))
    rows = rows_from_coco_results(results, Path("/x/res.json"), gt.records, gt.image_ids, gt.categories).rows
    sorted_ids = evaluate(rows, gt.records, image_ids=gt.image_ids)
    # The same records evaluated as if their ids followed the annotation file's image order:
    file_order = [next(i for i, im in enumerate(coco["images"]) if im["id"] == image_id) for image_id in gt.image_ids]
    as_in_file = evaluate(rows, gt.records, image_ids=file_order)
    ref = _reference(*_one_class(coco, results)).stats[:3]
    ours = sorted_ids["class_agnostic"]
    assert (ours["AP"], ours["AP50"], ours["AP75"]) == pytest.approx(tuple(ref), abs=1e-12)
    other = as_in_file["class_agnostic"]
    # the fixture's ties matter: file order gives another number (what the project reported before)
    assert max(abs(other[k] - ours[k]) for k in ("AP", "AP50", "AP75")) > 1e-9


def test_jsonl_ground_truth_with_coco_results_equals_pycocotools(tmp_path: Path):
    coco, results = _generated(2, False)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    lines = []
    for image in coco["images"]:
        objs = [{"bbox_2d": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
                 "desc": names[a["category_id"]], "category_id": a["category_id"],
                 **({"ignore": True} if a["iscrowd"] else {})}
                for a in coco["annotations"] if a["image_id"] == image["id"]]
        lines.append(json.dumps({"images": [f"images/{image['file_name']}"], "objects": objs, "width": 640,
                                 "height": 480}))
    gt = tmp_path / "gt.jsonl"
    gt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "res.json").write_text(json.dumps(results), encoding="utf-8")
    code, metrics, _ = _run_eval(tmp_path, gt, tmp_path / "res.json")
    assert code == 0 and metrics["inputs"]["gt_format"] == "jsonl"
    assert metrics["n_ignore_regions"] == sum(a["iscrowd"] for a in coco["annotations"])
    # category ids from the objects' category_id, image ids from the numbers ending the file names
    _assert_parity(metrics, coco, results)


# ---------------------------------------------------------------------------- crowd (ignore) regions


def test_iou_against_a_crowd_region_divides_by_the_detections_area():
    crowd_box = Obj("bbox_2d", (0.0, 0.0, 100.0, 100.0), "person")
    inside = Obj("bbox_2d", (10.0, 10.0, 30.0, 20.0), "person")  # area 200, all inside
    half_out = Obj("bbox_2d", (90.0, 0.0, 110.0, 10.0), "person")  # area 200, half inside
    ious = pairwise_iou([inside, half_out], [crowd_box, crowd_box], crowd=[True, False])
    np.testing.assert_allclose(ious, [[1.0, 200 / 10000], [0.5, 100 / 10100]])
    quad_region = Obj("quad", (0.0, 0.0, 100.0, 0.0, 100.0, 100.0, 0.0, 100.0), "")
    np.testing.assert_allclose(pairwise_iou([inside, half_out], [quad_region], crowd=[True]), [[1.0], [0.5]])
    from pycocotools import mask as mask_utils

    ref = mask_utils.iou([[10, 10, 20, 10], [90, 0, 20, 10]], [[0, 0, 100, 100]], [1])
    np.testing.assert_allclose(ious[:, :1], ref)


def test_match_greedy_prefers_ordinary_ground_truth_and_reuses_crowd_regions():
    # GT 0 is a crowd region, GT 1 ordinary; det 0 overlaps the crowd region more but takes GT 1
    ious = np.array([[0.9, 0.6], [0.8, 0.55], [0.7, 0.1]])
    det_to_gt, gt_to_det = match_greedy(ious, np.array([0.9, 0.8, 0.7]), 0.5, ignore=[True, False])
    assert det_to_gt.tolist() == [1, 0, 0]  # dets 1 and 2 both fall on the crowd region
    assert gt_to_det.tolist() == [1, 0]


def test_predictions_on_ignore_regions_are_neither_true_nor_false_positives():
    region = GroundingObject(kind="quad", points=(0, 0, 60, 0, 60, 60, 0, 60), desc="", ignore=True)
    person = GroundingObject(kind="bbox_2d", points=(100, 100, 150, 180), desc="person")
    rec = Record(image="/d/1.png", width=200, height=200, objects=(region, person),
                 source=SourceRef(file="/d/gt.jsonl", line=1))
    dets = [{"kind": "bbox_2d", "points": [100, 100, 150, 180], "desc": "person", "score": 0.5},
            {"kind": "bbox_2d", "points": [5, 5, 25, 25], "desc": "person", "score": 0.9},
            {"kind": "bbox_2d", "points": [30, 30, 50, 50], "desc": "text", "score": 0.8}]
    row = {"source": "/d/gt.jsonl:1", "image": "/d/1.png", "objects": dets, "parse_error": None}
    m = evaluate([row], [rec])
    assert m["n_gt_objects"] == 1 and m["n_ignore_regions"] == 1 and m["ignored_pred_objects"] == 2
    for key in ("class_agnostic", "mean_over_descs"):
        assert m[key]["AP"] == pytest.approx(1.0) and m[key]["precision"] == 1.0 and m[key]["fp"] == 0, key
    assert m["per_record"][0]["on_ignore"] == 2 and m["per_record"][0]["fp"] == 0
    # the same predictions with the region as an ordinary object: two false positives and a miss
    plain = Record(image="/d/1.png", width=200, height=200, objects=(
        GroundingObject(kind="quad", points=region.points, desc="text"), person), source=rec.source)
    assert evaluate([row], [plain])["class_agnostic"]["AP"] < 0.6


# ---------------------------------------------------------------------------- COCO results out


def _lines(records: list[Record], rng: np.random.Generator) -> list[PredictionLine]:
    lines = []
    for rec in records:
        objs = []
        for o in rec.objects:
            if o.ignore or rng.random() < 0.2:
                continue
            x1, y1, x2, y2 = o.points
            objs.append(PredictedObject("bbox_2d", (x1 + 1.5, y1, x2, y2 + 0.5), o.desc, round(float(rng.random()), 1)))
        objs.append(PredictedObject("quad", (10.0, 10.0, 50.0, 12.0, 48.0, 40.0, 8.0, 38.0), "thing3", 0.3))
        lines.append(PredictionLine(source=str(rec.source), image=rec.image, objects=objs))
    return lines


def test_infer_predictions_as_coco_results_evaluate_like_the_jsonl(tmp_path: Path):
    coco, _ = _generated(1, False)
    gt = records_from_coco(coco, tmp_path / "instances.json")
    lines = _lines(gt.records, np.random.default_rng(0))
    # without an annotation file: ids from the records' file names and desc set, the rule src.eval reads back
    image_ids, cats = coco_ids_for(gt.records)
    assert image_ids == jsonl_image_ids(gt.records) == gt.image_ids  # COCO_<id>.jpg carries the id
    results, counts = coco_results(lines, image_ids, cats)
    assert counts["quad as bbox"] == len(lines) and counts["desc not in categories"] == 0
    assert results[-1]["bbox"] == [8.0, 10.0, 42.0, 30.0]  # the quad's bounding box as [x, y, w, h]
    # with the annotation file: its own ids
    (tmp_path / "instances.json").write_text(json.dumps(coco), encoding="utf-8")
    ids2, cats2 = coco_ids_for(gt.records, tmp_path / "instances.json")
    assert ids2 == gt.image_ids and cats2 == {c["name"]: c["id"] for c in coco["categories"]}
    results2, _ = coco_results(lines, ids2, cats2)
    # read back against the annotation file: the boxes score as the JSONL predictions do
    box_lines = [PredictionLine(source=ln.source, image=ln.image,
                                objects=[o for o in ln.objects if o.kind == "bbox_2d"]) for ln in lines]
    box_results, _ = coco_results(box_lines, ids2, cats2)
    back = rows_from_coco_results(box_results, tmp_path / "r.json", gt.records, gt.image_ids, gt.categories)
    direct = evaluate([ln.to_json() for ln in box_lines], gt.records, image_ids=gt.image_ids)
    via_coco = evaluate(back.rows, gt.records, image_ids=gt.image_ids)
    for key in ("AP", "AP50", "AP75"):
        assert via_coco["mean_over_descs"][key] == pytest.approx(direct["mean_over_descs"][key], abs=1e-12)
    assert len(results2) == len(results)
    unknown = PredictionLine(source="s", image=gt.records[0].image,
                             objects=[PredictedObject("bbox_2d", (1.0, 1.0, 2.0, 2.0), "not a category", 0.5)])
    assert coco_results([unknown], ids2[:1], cats2)[1]["desc not in categories"] == 1


def test_category_ids_from_objects_and_descs():
    def rec(objs):
        return Record(image="/d/a.png", width=9, height=9, source=SourceRef(file="/d/g.jsonl", line=1),
                      objects=tuple(GroundingObject(kind="bbox_2d", points=(0, 0, 1, 1), **o) for o in objs))

    assert category_ids([rec([{"desc": "b"}, {"desc": "a"}])]) == {"a": 1, "b": 2}
    assert category_ids([rec([{"desc": "b", "category_id": 7}, {"desc": "a"}])]) == {"b": 7, "a": 8}
    with pytest.raises(ValueError, match="category_id 7"):
        category_ids([rec([{"desc": "b", "category_id": 7}, {"desc": "a", "category_id": 7}])])


# ---------------------------------------------------------------------------- inputs that do not pair


def _jsonl_gt(tmp_path: Path) -> Path:
    gt = tmp_path / "data" / "gt.jsonl"
    gt.parent.mkdir()
    gt.write_text("".join(json.dumps({"images": [f"img/{i}.png"], "width": 50, "height": 50,
                                      "objects": [{"bbox_2d": [5, 5, 20, 20], "desc": "cat"}]}) + "\n"
                          for i in (1, 2, 3)), encoding="utf-8")
    return gt


def _pred_line(image: str) -> str:
    return json.dumps({"image": image, "objects": [{"kind": "bbox_2d", "points": [5, 5, 20, 20], "desc": "cat",
                                                    "score": 0.9}], "parse_error": None}) + "\n"


def test_relative_prediction_paths_resolve_against_the_prediction_file(tmp_path: Path):
    gt = _jsonl_gt(tmp_path)
    pred = tmp_path / "data" / "preds" / "pred.jsonl"
    pred.parent.mkdir()
    pred.write_text("".join(_pred_line(f"../img/{i}.png") for i in (1, 2, 3)), encoding="utf-8")
    code, metrics, _ = _run_eval(tmp_path, gt, pred)
    assert code == 0 and metrics["class_agnostic"]["AP"] == pytest.approx(1.0)


def test_nothing_pairs_is_refused_with_what_did_not_match(tmp_path: Path):
    gt = _jsonl_gt(tmp_path)
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(_pred_line(f"/elsewhere/img/{i}.png") for i in (1, 2, 3)), encoding="utf-8")
    code, metrics, err = _run_eval(tmp_path, gt, pred)
    assert code == 2 and metrics is None
    assert "none of its 3 prediction lines pairs" in err and "/elsewhere/img/1.png" in err
    assert "--pair_by name" in err and str(tmp_path / "data" / "img" / "1.png") in err
    code, metrics, _ = _run_eval(tmp_path, gt, pred, "--pair_by", "name")
    assert code == 0 and metrics["class_agnostic"]["AP"] == pytest.approx(1.0)


def test_unreadable_or_misplaced_predictions_are_refused(tmp_path: Path):
    gt = _jsonl_gt(tmp_path)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n{oops\n" + _pred_line(str(tmp_path / "data" / "img" / "1.png")) + "]]\n",
                       encoding="utf-8")
    code, _, err = _run_eval(tmp_path, gt, garbage)
    assert code == 2 and "3 of 4 lines cannot be read" in err
    code, _, err = _run_eval(tmp_path, gt, gt)  # the ground truth given as predictions
    assert code == 2 and "looks like a ground-truth JSONL" in err
    code, _, err = _run_eval(tmp_path, gt, VAL100)
    assert code == 2 and "COCO annotation file (ground truth), not predictions" in err
    wrong_ids = tmp_path / "res.json"
    wrong_ids.write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [5, 5, 15, 15], "score": 0.5}]),
                         encoding="utf-8")
    code, _, err = _run_eval(tmp_path, gt, wrong_ids)
    assert code == 2 and "none of the 1 results names an image id" in err and "99" in err
    wrong_cats = tmp_path / "res2.json"
    wrong_cats.write_text(json.dumps([{"image_id": 2, "category_id": 5, "bbox": [5, 5, 15, 15], "score": 0.5}]),
                          encoding="utf-8")
    code, _, err = _run_eval(tmp_path, gt, wrong_cats)
    assert code == 2 and "no result has a category id" in err and "1 = 'cat'" in err
    segm = tmp_path / "segm.json"
    segm.write_text(json.dumps([{"image_id": 2, "category_id": 1, "segmentation": [[1, 2, 3, 4, 5, 6]],
                                 "score": 0.5}] * 3), encoding="utf-8")
    code, _, err = _run_eval(tmp_path, gt, segm)
    assert code == 2 and "segmentation results are not evaluated" in err


def test_jsonl_ground_truth_pairs_coco_results_by_file_name_number(tmp_path: Path):
    gt = _jsonl_gt(tmp_path)
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": i, "category_id": 1, "bbox": [5, 5, 15, 15], "score": 0.5}
                               for i in (3, 1)]), encoding="utf-8")  # image 2: no detection, a miss
    code, metrics, _ = _run_eval(tmp_path, gt, res)
    assert code == 0 and metrics["parse_failures"] == 0
    assert metrics["class_agnostic"]["recall"] == pytest.approx(2 / 3)


def _frames(tmp_path: Path) -> tuple[Path, Path, Path, list[dict]]:
    """Three images frame_0/1/2.jpg with COCO ids 1-3 (the file-name numbers are 0-2): the annotation file, the
    JSONL converted from it, and results equal to the ground truth."""
    coco = {"images": [{"id": i + 1, "file_name": f"frame_{i}.jpg", "width": 100, "height": 100} for i in range(3)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10 * i, 10, 20, 20 + i],
                             "area": 400, "iscrowd": 0} for i in range(3)],
            "categories": [{"id": 1, "name": "thing"}]}
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(coco), encoding="utf-8")
    gt = tmp_path / "gt.jsonl"
    gt.write_text("".join(json.dumps({"images": [im["file_name"]], "width": 100, "height": 100, "objects": [
        {"bbox_2d": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
         "desc": "thing", "category_id": 1}]}) + "\n" for im, a in zip(coco["images"], coco["annotations"],
                                                                        strict=True)), encoding="utf-8")
    results = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
               for a in coco["annotations"]]
    res = tmp_path / "res.json"
    res.write_text(json.dumps(results), encoding="utf-8")
    return ann, gt, res, results


def test_coco_results_against_a_jsonl_pair_through_coco_gt_and_unknown_derived_ids_are_refused(tmp_path: Path):
    ann, gt, res, results = _frames(tmp_path)
    code, metrics, _ = _run_eval(tmp_path, ann, res)
    assert code == 0 and metrics["class_agnostic"]["AP"] == pytest.approx(1.0)
    # the JSONL's ids are guessed from the file names (0, 1, 2): result 3 is for no image, and 1 and 2 would
    # land on the next frames (AP 0 with exit 0 before); refused, naming the ids and the fix
    code, metrics, err = _run_eval(tmp_path, gt, res)
    assert code == 2 and metrics is None
    assert "1 of its 3 results name image ids" in err and "3 (1x)" in err and "0 = frame_0.jpg" in err
    assert "--coco_gt" in err
    # with the annotation file the JSONL came from: images by file name, pycocotools' numbers
    code, metrics, _ = _run_eval(tmp_path, gt, res, "--coco_gt", str(ann))
    assert code == 0 and metrics["inputs"]["gt_image_ids"] == "coco_gt"
    assert metrics["class_agnostic"]["AP"] == pytest.approx(1.0) and metrics["inputs"]["coco_gt"] == str(ann)
    coco = json.loads(ann.read_text(encoding="utf-8"))
    worse = [{**r, "bbox": [r["bbox"][0] + 6, *r["bbox"][1:]]} if r["image_id"] == 2 else r for r in results]
    res.write_text(json.dumps(worse), encoding="utf-8")
    code, metrics, _ = _run_eval(tmp_path, gt, res, "--coco_gt", str(ann))
    assert code == 0
    ref = _reference(coco, worse)
    assert metrics["mean_over_descs"]["AP"] == pytest.approx(ref.stats[0], abs=1e-6) and ref.stats[0] < 0.9
    # --coco_gt with a COCO --gt, or one without the JSONL's images: exit 2
    code, _, err = _run_eval(tmp_path, ann, res, "--coco_gt", str(ann))
    assert code == 2 and "--coco_gt is for a JSONL ground truth" in err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**coco, "images": coco["images"][:2]}), encoding="utf-8")
    code, _, err = _run_eval(tmp_path, gt, res, "--coco_gt", str(other))
    assert code == 2 and "--coco_gt:" in err and "frame_2.jpg" in err


def test_a_coco_file_in_any_layout_is_one_document_and_a_broken_jsonl_keeps_its_line_errors(tmp_path: Path):
    ann, _, res, _ = _frames(tmp_path)
    coco = json.loads(ann.read_text(encoding="utf-8"))
    # the first line is not a value alone, nor a bare "{": exit 2 ("no valid record") before
    split = ",\n".join(f'"{key}": {json.dumps(coco[key])}' for key in ("images", "annotations", "categories"))
    layouts = {"split.json": "{" + split + "}\n",
               "blank_first.json": "\n\n" + json.dumps(coco, indent=2),
               "bom.json": "\ufeff" + json.dumps(coco, indent=2)}
    for name, text in layouts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert read_json_document(tmp_path / name) == coco, name
        code, metrics, _ = _run_eval(tmp_path, tmp_path / name, res)
        assert code == 0 and metrics["inputs"]["gt_format"] == "coco" and metrics["class_agnostic"]["AP"] == 1.0
    results = json.loads(res.read_text(encoding="utf-8"))
    (tmp_path / "res_split.json").write_text("[" + json.dumps(results[0]) + ",\n" + json.dumps(results[1:])[1:],
                                             encoding="utf-8")
    assert read_json_document(tmp_path / "res_split.json") == results
    # a JSONL whose first line is cut off stays a JSONL: its own lines' errors, the good lines read
    line = json.dumps({"images": ["frame_0.jpg"], "width": 100, "height": 100,
                       "objects": [{"bbox_2d": [0, 10, 20, 30], "desc": "thing"}]})
    broken = tmp_path / "broken.jsonl"
    broken.write_text(line[:30] + "\n" + line + "\n", encoding="utf-8")
    assert read_json_document(broken) is None
    gt = load_ground_truth(broken)
    assert gt.format == "jsonl" and len(gt.records) == 1 and f"{broken}:1" in gt.problems[0]


def test_converted_descs_and_the_coco_files_descs_are_one_rule(tmp_path: Path):
    from src.datasets.convert_coco import coco_to_records

    ann, _, _, _ = _frames(tmp_path)
    coco = json.loads(ann.read_text(encoding="utf-8"))
    # two categories named "person" (one with spaces around), one "car"
    coco["categories"] = [{"id": 1, "name": " person "}, {"id": 2, "name": "person"}, {"id": 3, "name": "car"}]
    for a, cid in zip(coco["annotations"], (1, 2, 3), strict=True):
        a["category_id"] = cid
    ann.write_text(json.dumps(coco), encoding="utf-8")
    records, problems = coco_to_records(coco, tmp_path, tmp_path, size_fn=lambda p: (100, 100))
    assert problems == []
    written = [o["desc"] for r in records for o in r["objects"]]
    assert written == ["person (category_id 1)", "person (category_id 2)", "car"]  # " person " and "person" before
    assert sorted(records_from_coco(coco, ann).categories.values()) == sorted(written)
    gt = tmp_path / "converted.jsonl"
    gt.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    jsonl = load_ground_truth(gt)
    # src.infer --coco_results --coco_gt: every desc finds its category id (none did for repeated names)
    image_ids, cats = coco_ids_for(jsonl.records, ann)
    assert image_ids == [1, 2, 3] and all(cats[d] == cid for d, cid in zip(written, (1, 2, 3), strict=True))
    lines = [PredictionLine(source=str(r.source), image=r.image,
                            objects=[PredictedObject(o.kind, o.points, o.desc, 0.8) for o in r.objects])
             for r in jsonl.records]
    results, counts = coco_results(lines, image_ids, cats)
    assert counts["desc not in categories"] == 0 and len(results) == 3
    (tmp_path / "res.json").write_text(json.dumps(results), encoding="utf-8")
    code, metrics, _ = _run_eval(tmp_path, gt, tmp_path / "res.json", "--coco_gt", str(ann))
    assert code == 0 and metrics["mean_over_descs"]["AP"] == pytest.approx(1.0) and len(metrics["per_desc"]) == 3


def test_a_result_with_a_negative_width_or_height_is_a_bad_entry_as_pycocotools_leaves_it_out(tmp_path: Path):
    ann, _, res, results = _frames(tmp_path)
    coco = json.loads(ann.read_text(encoding="utf-8"))
    for bbox in ([60, 60, -5, 10], [60, 60, 10, -5]):
        entries = [*results, {"image_id": 1, "category_id": 1, "bbox": bbox, "score": 0.95}]
        res.write_text(json.dumps(entries), encoding="utf-8")
        code, metrics, err = _run_eval(tmp_path, ann, res)
        # before: a false positive; pycocotools: a negative area, outside the area range, is ignored
        assert code == 0 and metrics["inputs"]["bad_pred_lines"] == [f"{res}: entry 3: bbox [x, y, w, h] needs "
                                                                     f"w, h >= 0, got {bbox}"]
        assert "prediction skipped" in err
        _assert_parity(metrics, coco, entries, min_categories=1)
    # both negative: pycocotools counts a false positive (a positive area that matches nothing); left out here
    entries = [*results, {"image_id": 1, "category_id": 1, "bbox": [60, 60, -5, -5], "score": 0.95}]
    res.write_text(json.dumps(entries), encoding="utf-8")
    code, metrics, _ = _run_eval(tmp_path, ann, res)
    assert code == 0 and len(metrics["inputs"]["bad_pred_lines"]) == 1
    assert metrics["class_agnostic"]["AP"] == pytest.approx(1.0) and _reference(coco, entries).stats[0] < 0.9


def test_coco_results_for_an_image_several_records_hold_are_refused(tmp_path: Path):
    gt = tmp_path / "gt.jsonl"
    box = {"bbox_2d": [5, 5, 20, 20], "desc": "cat"}
    gt.write_text("".join(json.dumps({"images": [image], "width": 50, "height": 50, "objects": objects}) + "\n"
                          for image, objects in (("img/1.png", [box]), ("img/2.png", [box]),
                                                 ("img/2.png", [{**box, "bbox_2d": [30, 30, 45, 45]}]))),
                  encoding="utf-8")
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": i, "category_id": 1, "bbox": b, "score": 0.9}
                               for i, b in ((1, [5, 5, 15, 15]), (2, [5, 5, 15, 15]), (2, [30, 30, 15, 15]))]),
                   encoding="utf-8")
    # before: both results of image 2 went to its first record (one TP, one FP, the second record all missed)
    code, metrics, err = _run_eval(tmp_path, gt, res)
    assert code == 2 and metrics is None
    assert "several records" in err and f"image id 2: records {gt}:2, {gt}:3" in err and "Merge" in err
    res.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [5, 5, 15, 15], "score": 0.9}]),
                   encoding="utf-8")
    code, metrics, _ = _run_eval(tmp_path, gt, res)  # no result for the shared image: nothing to split
    assert code == 0 and metrics["class_agnostic"]["recall"] == pytest.approx(1 / 3)


def test_infer_refuses_coco_results_it_cannot_map_before_loading_a_model(tree, data_dir, tmp_path, capsys):
    from src.infer import main as infer_main

    t = tree()
    model = tmp_path / "checkpoint"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")  # a checkpoint to the early checks; never loaded
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "other.png"}], "annotations": [],
                                "categories": [{"id": 1, "name": "cat"}]}), encoding="utf-8")
    out, results = tmp_path / "pred.jsonl", tmp_path / "results.json"
    argv = ["--config", str(t.config), "--checkpoint", str(model), "--jsonl", str(data_dir / "train.jsonl"),
            "--out", str(out), "--coco_results", str(results)]
    assert infer_main([*argv, "--coco_gt", str(coco)]) == 2
    err = capsys.readouterr().err
    assert "--coco_results:" in err and "images of the records are not in its images (e.g. 000001.png" in err
    assert not out.exists() and not results.exists()
    results.write_text("[]", encoding="utf-8")
    assert infer_main(argv) == 2 and "results.json" in capsys.readouterr().err  # never overwritten
    assert results.read_text(encoding="utf-8") == "[]"
