"""src.eval: COCO AP cross-checked against pycocotools, edge cases, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from src.datasets.contract import GroundingObject, Record, SourceRef
from src.eval import main
from src.evaluation.metrics import (
    Obj,
    evaluate,
    format_table,
    match_greedy,
    pair_predictions,
    pairwise_iou,
    prediction_objects,
)

GT_FILE = "/data/gt.jsonl"


def record(i: int, objects: list[tuple[str, list[float], str]], width: int = 200, height: int = 200) -> Record:
    return Record(image=f"/data/img{i}.png", width=width, height=height,
                  objects=tuple(GroundingObject(kind=k, points=tuple(p), desc=d) for k, p, d in objects),
                  source=SourceRef(file=GT_FILE, line=i + 1))


def pred_row(i: int, objects: list[dict], parse_error: str | None = None) -> dict:
    return {"source": f"{GT_FILE}:{i + 1}", "image": f"/data/img{i}.png", "width": 200, "height": 200,
            "raw": "", "parse_error": parse_error, "objects": objects}


def det(kind: str, points: list[float], desc: str, score: float | None = None) -> dict:
    out = {"kind": kind, "points": points, "desc": desc}
    if score is not None:
        out["score"] = score
    return out


# ---------------------------------------------------------------------------- pycocotools cross-check


def _fixture(seed: int = 0, n_images: int = 12):
    """GT records, prediction rows and the same data in COCO format.

    Coordinates are multiples of 0.5 so both implementations compute bit-identical IoUs
    (including IoUs exactly at a threshold); scores have one decimal so that ties occur.
    """
    rng = np.random.default_rng(seed)
    cats = ["cat", "dog", "text"]
    records, rows, coco_images, coco_gts, coco_dts = [], [], [], [], []
    for i in range(n_images):
        gts, dets = [], []
        for _ in range(rng.integers(0, 7)):
            x, y = rng.integers(0, 300, 2) / 2
            w, h = rng.integers(10, 100, 2) / 2
            gts.append(([x, y, x + w, y + h], cats[rng.integers(0, 3)]))
        for box, desc in gts:
            for _ in range(rng.integers(0, 3)):  # 0 (a miss), 1 or 2 (a duplicate) detections per GT
                jitter = rng.integers(-3, 4, 4) / 2
                b = [box[0] + jitter[0], box[1] + jitter[1], box[2] + abs(jitter[2]) + 1, box[3] + abs(jitter[3]) + 1]
                d = desc if rng.random() < 0.85 else cats[rng.integers(0, 3)]
                dets.append((b, d, round(float(rng.random()), 1)))
        for _ in range(rng.integers(0, 3)):  # background false positives
            x, y = rng.integers(0, 300, 2) / 2
            dets.append(([x, y, x + 20, y + 15], cats[rng.integers(0, 3)], round(float(rng.random()), 1)))
        if i == 0:  # IoU exactly 0.5 and exactly 0.75 against a fixed GT box
            gts.append(([0.0, 0.0, 10.0, 10.0], "cat"))
            dets += [([0.0, 0.0, 10.0, 5.0], "cat", 0.9), ([0.0, 0.0, 10.0, 7.5], "cat", 0.3)]
        records.append(record(i, [("bbox_2d", b, d) for b, d in gts]))
        rows.append(pred_row(i, [det("bbox_2d", b, d, s) for b, d, s in dets]))
        image_id = i + 1  # COCO image ids sort in record order, so cross-image score ties break alike
        coco_images.append({"id": image_id, "width": 200, "height": 200})
        for b, d in gts:
            w, h = b[2] - b[0], b[3] - b[1]
            # ids start at 1: COCOeval treats a match with gt id 0 as no match
            coco_gts.append({"id": len(coco_gts) + 1, "image_id": image_id, "category_id": cats.index(d) + 1,
                             "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, d, s in dets:
            coco_dts.append({"image_id": image_id, "category_id": cats.index(d) + 1,
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    coco = {"images": coco_images, "annotations": coco_gts,
            "categories": [{"id": k + 1, "name": c} for k, c in enumerate(cats)]}
    return records, rows, coco, coco_dts


def _one_class(coco_dict: dict, dts: list[dict]) -> tuple[dict, list[dict]]:
    # Class-agnostic reference: every annotation relabelled to one category. (COCOeval's useCats=0
    # is not the same thing: it drops detections of categories absent from the GT and orders each
    # image's objects by category, which changes how score ties break.)
    return ({**coco_dict, "annotations": [{**a, "category_id": 1} for a in coco_dict["annotations"]],
             "categories": [{"id": 1, "name": "object"}]}, [{**d, "category_id": 1} for d in dts])


def _cocoeval(coco_dict: dict, dts: list[dict]) -> tuple[float, float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_dict
        gt.createIndex()
        dt = gt.loadRes(dts)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1]), float(ev.stats[2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_matches_pycocotools(seed):
    records, rows, coco, dts = _fixture(seed)
    metrics = evaluate(rows, records)
    for key, ref_input in (("class_agnostic", _one_class(coco, dts)), ("mean_over_descs", (coco, dts))):
        ours = metrics[key]
        ref = _cocoeval(*ref_input)
        assert (ours["AP"], ours["AP50"], ours["AP75"]) == pytest.approx(ref, abs=1e-6), key
        assert 0.05 < ours["AP"] < 0.95  # a fixture that actually exercises matching
    # per-desc AP equals COCOeval restricted to that category
    for k, name in enumerate(["cat", "dog", "text"]):
        sub = {**coco, "annotations": [a for a in coco["annotations"] if a["category_id"] == k + 1]}
        if not sub["annotations"]:
            continue
        sub_dts = [d for d in dts if d["category_id"] == k + 1]
        ref = _cocoeval(sub, sub_dts) if sub_dts else (0.0, 0.0, 0.0)
        per = metrics["per_desc"][name]
        assert (per["AP"], per["AP50"], per["AP75"]) == pytest.approx(ref, abs=1e-6), name


# ---------------------------------------------------------------------------- edge cases

GT_OBJECTS = [("bbox_2d", [10, 10, 50, 40], "red circle"), ("quad", [60, 60, 90, 65, 85, 95, 55, 90], "text: AB"),
              ("bbox_2d", [100, 20, 150, 80], "red circle")]


def test_perfect_predictions_give_ap_1():
    records = [record(0, GT_OBJECTS), record(1, GT_OBJECTS[:1])]
    rows = [pred_row(r, [det(k, p, d, 0.9) for k, p, d in objs]) for r, objs in ((0, GT_OBJECTS), (1, GT_OBJECTS[:1]))]
    m = evaluate(rows, records)
    for key in ("class_agnostic", "mean_over_descs"):
        # approx: COCO's precision tp / (tp + fp + eps) stays a hair below 1
        assert (m[key]["AP"], m[key]["AP50"], m[key]["AP75"]) == pytest.approx((1.0, 1.0, 1.0))
        assert (m[key]["precision"], m[key]["recall"], m[key]["f1"]) == (1.0, 1.0, 1.0)
    assert m["per_desc"]["text: AB"]["AP"] == pytest.approx(1.0)
    assert m["parse_failures"] == 0 and m["scores_missing"] == 0 and m["missing_predictions"] == []


def test_empty_predictions_give_ap_0():
    m = evaluate([pred_row(0, [])], [record(0, GT_OBJECTS)])
    assert m["class_agnostic"]["AP"] == 0.0 and m["class_agnostic"]["AP50"] == 0.0
    assert m["class_agnostic"]["recall"] == 0.0 and m["class_agnostic"]["precision"] is None
    assert m["per_desc"]["red circle"]["AP"] == 0.0


def test_no_gt_objects_gives_undefined_ap():
    m = evaluate([pred_row(0, [det("bbox_2d", [1, 1, 5, 5], "x")])], [record(0, [])])
    assert m["class_agnostic"]["AP"] is None and m["class_agnostic"]["precision"] == 0.0
    assert m["pred_descs_not_in_gt"] == {"x": 1}


def test_quad_equal_to_gt_quad_has_iou_1():
    quad = (60.0, 60.0, 90.0, 65.0, 85.0, 95.0, 55.0, 90.0)
    shifted = quad[2:] + quad[:2]  # same polygon, vertices starting elsewhere
    ious = pairwise_iou([Obj("quad", quad, "t"), Obj("quad", shifted, "t")], [Obj("quad", quad, "t")])
    assert ious[:, 0] == pytest.approx([1.0, 1.0])


def test_pairwise_iou_kinds():
    box = Obj("bbox_2d", (0.0, 0.0, 10.0, 10.0), "a")
    as_quad = Obj("quad", (0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0), "a")
    half = Obj("bbox_2d", (0.0, 0.0, 10.0, 5.0), "a")
    diamond = Obj("quad", (5.0, 0.0, 10.0, 5.0, 5.0, 10.0, 0.0, 5.0), "a")
    assert pairwise_iou([as_quad], [box])[0, 0] == pytest.approx(1.0)
    assert pairwise_iou([half], [box])[0, 0] == 0.5
    assert pairwise_iou([diamond], [box])[0, 0] == pytest.approx(0.5)  # polygon, not its bounding box
    assert pairwise_iou([diamond], [box], "bbox")[0, 0] == pytest.approx(1.0)
    assert pairwise_iou([half, diamond], [box], "polygon")[:, 0] == pytest.approx([0.5, 0.5])
    bowtie = Obj("quad", (0.0, 0.0, 10.0, 10.0, 10.0, 0.0, 0.0, 10.0), "a")
    assert 0.0 < pairwise_iou([bowtie], [box])[0, 0] < 1.0  # repaired, not NaN
    assert pairwise_iou([], [box]).shape == (0, 1)


def test_parse_failures_and_missing_rows_counted():
    records = [record(0, GT_OBJECTS[:1]), record(1, GT_OBJECTS[:1]), record(2, GT_OBJECTS[:1])]
    rows = [pred_row(0, [det("bbox_2d", [10, 10, 50, 40], "red circle")], parse_error="answer cut off"),
            pred_row(1, [det("bbox_2d", [10, 10, 50, 40], "red circle")]),
            {**pred_row(7, []), "image": "/elsewhere/x.png"}]
    m = evaluate(rows, records)
    assert m["parse_failures"] == 2 and m["parse_failure_rate"] == pytest.approx(2 / 3)
    assert m["missing_predictions"] == [f"{GT_FILE}:3"]
    assert m["unpaired_rows"]["unknown_images"] == ["/elsewhere/x.png"]
    assert m["per_record"][0]["parse_error"] == "answer cut off" and m["per_record"][0]["tp"] == 1
    assert m["scores_missing"] == 2  # objects of a failed parse still count, scored 1.0
    assert m["class_agnostic"]["recall"] == pytest.approx(2 / 3)


def test_label_aware_metrics_need_equal_desc():
    m = evaluate([pred_row(0, [det("bbox_2d", [10, 10, 50, 40], "blue square", 0.5)])], [record(0, GT_OBJECTS[:1])])
    assert m["class_agnostic"]["tp"] == 1 and m["class_agnostic"]["AP"] == pytest.approx(1.0)
    assert m["mean_over_descs"]["tp"] == 0 and m["mean_over_descs"]["AP"] == 0.0
    assert m["pred_descs_not_in_gt"] == {"blue square": 1}


def test_max_dets_truncates_per_image():
    gts = [("bbox_2d", [i, 0, i + 1, 1], "x") for i in range(5)]
    dets = [det("bbox_2d", [i, 0, i + 1, 1], "x", 1.0 - i / 10) for i in range(5)]
    m = evaluate([pred_row(0, dets)], [record(0, gts)], max_dets=2)
    assert m["images_over_max_dets"] == 1
    assert m["class_agnostic"]["AP"] == pytest.approx(41 / 101)  # recall stops at 0.4: thresholds 0..0.4 hit
    assert m["class_agnostic"]["recall"] == 1.0  # P/R/F1 use every prediction


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_max_dets_below_1_is_a_usage_error(tmp_path: Path, capsys, value: str):
    # -1 was accepted and dropped each image's last detection (dets[:-1]) without a word
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    with pytest.raises(SystemExit) as exc:
        main(["--gt", str(gt), "--pred", str(pred), "--max_dets", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max_dets/--max-dets: must be" in err and value in err
    with pytest.raises(ValueError, match="max_dets must be an integer >= 1"):
        evaluate([], [], max_dets=-1)


def test_match_greedy_prefers_high_score_and_best_iou():
    ious = np.array([[0.6, 0.9], [0.95, 0.7]])
    det_to_gt, gt_to_det = match_greedy(ious, np.array([0.5, 0.9]))
    assert det_to_gt.tolist() == [1, 0] and gt_to_det.tolist() == [1, 0]
    det_to_gt, _ = match_greedy(np.array([[0.6], [0.7]]), np.array([0.9, 0.8]))
    assert det_to_gt.tolist() == [0, -1]  # a GT is matched once


def test_prediction_objects_validation():
    row = pred_row(0, [det("bbox_2d", [1, 2, 3], "short"), det("circle", [1, 2, 3, 4], "x"),
                       det("bbox_2d", [1, 2, 3, float("nan")], "nan"), det("quad", list(range(8)), "q", 0.3), 5])
    objs, invalid, missing = prediction_objects(row)
    assert [o.desc for o in objs] == ["q"] and objs[0].score == 0.3 and invalid == 4 and missing == 0


def test_pairing_uses_source_for_repeated_images():
    recs = [record(0, []), Record(image="/data/img0.png", width=200, height=200, objects=(),
                                  source=SourceRef(file=GT_FILE, line=9))]
    second = {**pred_row(0, []), "source": f"{GT_FILE}:9"}
    paired, unpaired = pair_predictions([second, pred_row(0, []), pred_row(0, [])], recs)
    assert paired[1] is second and paired[0] is not second and unpaired["duplicates"] == ["/data/img0.png"]


# ---------------------------------------------------------------------------- CLI


def test_cli_writes_metrics(tmp_path: Path, capsys):
    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"images": ["a.png"], "objects": [{"bbox_2d": [1, 1, 5, 5], "desc": "x"}],
                              "width": 10, "height": 10}) + "\n", encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"source": f"{gt}:1", "image": str(tmp_path / "a.png"), "width": 10, "height": 10,
                                "raw": "", "parse_error": None,
                                "objects": [{"kind": "bbox_2d", "points": [1, 1, 5, 5], "desc": "x"}]}) + "\n",
                    encoding="utf-8")
    out = tmp_path / "m" / "metrics.json"
    assert main(["--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text(encoding="utf-8"))
    assert metrics["class_agnostic"]["AP"] == pytest.approx(1.0) and metrics["scores_missing"] == 1
    printed = capsys.readouterr().out
    assert "class-agnostic" in printed and "no score" in printed
    assert main(["--pred", str(tmp_path / "missing.jsonl"), "--gt", str(gt)]) == 2


def test_polygon_iou_of_partly_overlapping_quads_is_intersection_over_union():
    from src.evaluation.metrics import polygon_iou

    square = [0, 0, 10, 0, 10, 10, 0, 10]  # area 100
    shifted = [5, 0, 15, 0, 15, 10, 5, 10]  # area 100, overlap 50: IoU 50 / 150
    diamond = [10, 0, 15, 5, 10, 10, 5, 5]  # area 50, overlap 25 (its left half): IoU 25 / 125
    iou = polygon_iou(np.array([square], dtype=float), np.array([shifted, diamond], dtype=float))
    np.testing.assert_allclose(iou, [[1 / 3, 0.2]], atol=1e-12)
    np.testing.assert_allclose(polygon_iou(np.array([diamond], dtype=float), np.array([square], dtype=float)),
                               [[0.2]], atol=1e-12)  # symmetric: not intersection / area of either one


def test_an_ignore_region_with_a_desc_ignores_only_that_desc():
    region = GroundingObject(kind="bbox_2d", points=(0, 0, 100, 100), desc="person", ignore=True)
    dog = GroundingObject(kind="bbox_2d", points=(120, 120, 180, 180), desc="dog")
    rec = Record(image="/data/img0.png", width=200, height=200, objects=(region, dog),
                 source=SourceRef(file=GT_FILE, line=1))
    dets = [det("bbox_2d", [120, 120, 180, 180], "dog", 0.5), det("bbox_2d", [10, 10, 30, 30], "person", 0.9),
            det("bbox_2d", [40, 40, 60, 60], "dog", 0.8)]
    m = evaluate([pred_row(0, dets)], [rec])
    # class-agnostic: both small boxes fall on the region; by desc only the person does, the dog on it is an FP
    assert m["class_agnostic"]["fp"] == 0 and m["ignored_pred_objects"] == 2
    assert m["mean_over_descs"]["fp"] == 1 and m["per_desc"]["dog"]["fp"] == 1
    assert m["per_desc"]["person"]["n_gt"] == 0 and m["per_desc"]["person"]["AP"] is None  # only a region
    assert m["per_desc"]["dog"]["AP"] < 1.0 and m["class_agnostic"]["AP"] == pytest.approx(1.0)
    assert "ignore regions 1" in format_table(m)


def test_metrics_on_a_full_disk_keep_the_earlier_file_whole(tmp_path: Path):
    """Metrics were written straight into `--out`: with --overwrite a full disk emptied the earlier file and left
    a shorter one that looked whole. They go to a partial file renamed into place: the earlier file stays."""
    import sys

    from tests.support.full_disk import can_fill_a_disk, run_on_full_disk

    if not can_fill_a_disk():
        pytest.skip("no private mount namespace here (unshare -rm): a full disk cannot be made honestly")
    descs = [f"thing {i}" for i in range(20)]  # the new metrics (a row per desc) outgrow the earlier file's page
    gt = tmp_path / "gt.jsonl"
    gt.write_text("".join(json.dumps({"images": [f"{i}.png"], "objects": [{"bbox_2d": [1, 1, 5, 5], "desc": d}],
                                      "width": 10, "height": 10}) + "\n" for i, d in enumerate(descs)))
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"image": str(tmp_path / f"{i}.png"), "objects": [], "parse_error": None})
                            + "\n" for i in range(len(descs))))
    folder = tmp_path / "out"
    folder.mkdir()
    earlier = '{"class_agnostic": {"AP": 0.5}}\n'
    (folder / "metrics.json").write_text(earlier)
    result, left = run_on_full_disk(folder, [sys.executable, "-m", "src.eval", "--pred", str(pred), "--gt", str(gt),
                                             "--out", str(folder / "metrics.json"), "--overwrite"])
    assert result.returncode == 3, result.stderr
    assert "No space left on device" in result.stderr
    assert sorted(p.name for p in left.iterdir()) == ["metrics.json"]  # no partial file left behind
    assert (left / "metrics.json").read_text() == earlier
