"""src.vis (annotated PNGs and contact sheet) and src.training.curves (loss curves)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from src.evaluation.pictures import BLUE, GREEN, GREY, ORANGE, RED, scale_factor
from src.training.curves import plot_loss_curves, read_loss_rows
from src.vis import main

BOX = [8, 8, 24, 20]  # on a 64x48 image: scaled by 8 to 512x384
FP_BOX = [40, 30, 60, 44]
QUAD = [30, 4, 50, 6, 48, 20, 28, 18]


def _colour_near(img: Image.Image, x: int, y: int, colour: tuple[int, int, int], radius: int = 1) -> bool:
    return any(img.getpixel((x + dx, y + dy)) == colour
               for dx in range(-radius, radius + 1) for dy in range(-radius, radius + 1))


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 48), (128, 128, 128)).save(tmp_path / name)
    gt = tmp_path / "gt.jsonl"
    gt.write_text("".join(json.dumps(r) + "\n" for r in [
        {"images": ["a.png"], "width": 64, "height": 48,
         "objects": [{"bbox_2d": BOX, "desc": "red circle"}, {"quad": QUAD, "desc": "text: AB"}]},
        {"images": ["b.png"], "width": 64, "height": 48, "objects": [{"bbox_2d": BOX, "desc": "dog"}]},
    ]), encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in [
        {"source": f"{gt}:1", "image": str(tmp_path / "a.png"), "width": 64, "height": 48, "raw": "",
         "parse_error": None, "objects": [{"kind": "bbox_2d", "points": BOX, "desc": "red circle", "score": 0.9},
                                          {"kind": "bbox_2d", "points": FP_BOX, "desc": "cat", "score": 0.4}]},
        {"source": f"{gt}:2", "image": str(tmp_path / "b.png"), "width": 64, "height": 48, "raw": "junk",
         "parse_error": "no JSON list or grounding tokens found", "objects": []},
    ]), encoding="utf-8")
    return gt, pred


def test_scale_factor():
    assert scale_factor(64, 48) == 8 and scale_factor(1000, 800) == 1 and scale_factor(100, 500) == 4
    # A strip is not blown up past 4096 px on its long side (4000 x 2 by 192 was a 295-megapixel PNG).
    assert scale_factor(4000, 2) == 1 and scale_factor(3, 200) == 20 and scale_factor(64, 48, min_side=10**6) == 64


def test_vis_draws_a_thin_strip_at_a_size_it_can_open(tmp_path: Path):
    Image.new("RGB", (2000, 4), (128, 128, 128)).save(tmp_path / "strip.png")
    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"images": ["strip.png"], "width": 2000, "height": 4,
                              "objects": [{"bbox_2d": [100, 0, 300, 4], "desc": "text: EXIT"}]}) + "\n",
                  encoding="utf-8")
    assert main(["--gt", str(gt), "--out", str(tmp_path / "vis")]) == 0
    img = Image.open(next((tmp_path / "vis").glob("*.png"))).convert("RGB")
    assert img.size == (4000, 8)  # by 2, not by 96 (192,000 x 384)
    assert _colour_near(img, 200, 4, BLUE, radius=3)


def test_vis_gt_only(data, tmp_path: Path):
    gt, _ = data
    out = tmp_path / "vis"
    assert main(["--gt", str(gt), "--out", str(out)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 2
    img = Image.open(out / pngs[0]).convert("RGB")
    assert img.size == (512, 384)
    # left edge of the GT box, scaled by 8, half-way down
    assert _colour_near(img, BOX[0] * 8, (BOX[1] + BOX[3]) * 4, BLUE)


def test_vis_with_predictions(data, tmp_path: Path):
    gt, pred = data
    out = tmp_path / "vis"
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    first = Image.open(pngs[0]).convert("RGB")
    second = Image.open(pngs[1]).convert("RGB")
    mid_y = (BOX[1] + BOX[3]) * 4
    assert _colour_near(first, BOX[0] * 8, mid_y, GREEN)  # matched prediction drawn over its GT
    assert _colour_near(first, FP_BOX[0] * 8, (FP_BOX[1] + FP_BOX[3]) * 4, RED)  # false positive
    assert _colour_near(first, QUAD[0] * 8, QUAD[1] * 8, ORANGE, radius=2)  # missed GT quad, at a vertex
    assert _colour_near(second, BOX[0] * 8, mid_y, ORANGE)  # failed parse: its GT is missed
    index = (out / "index.html").read_text(encoding="utf-8")
    linked = set(re.findall(r'href="([^"]+\.png)"', index))
    assert linked == {p.name for p in pngs}
    assert "TP 1" in index and "FP 1" in index and "FN 1" in index and "parse error" in index


def test_vis_draws_ignore_regions_grey_and_dashed(tmp_path: Path):
    Image.new("RGB", (64, 48), (255, 255, 255)).save(tmp_path / "a.png")
    region = [30, 4, 60, 44]
    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"images": ["a.png"], "width": 64, "height": 48, "objects": [
        {"bbox_2d": BOX, "desc": "dog"}, {"bbox_2d": region, "ignore": True}]}) + "\n", encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    on_region = [34, 8, 44, 18]  # inside the region: IoU 1 against it (intersection over its own area)
    pred.write_text(json.dumps({"image": "a.png", "parse_error": None, "objects": [
        {"kind": "bbox_2d", "points": BOX, "desc": "dog", "score": 0.9},
        {"kind": "bbox_2d", "points": on_region, "desc": "dog", "score": 0.8}]}) + "\n", encoding="utf-8")
    out = tmp_path / "vis"
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out)]) == 0
    img = Image.open(next(out.glob("*.png"))).convert("RGB")
    # the region's left edge: grey dashes with gaps between them
    edge = [img.getpixel((region[0] * 8, y)) for y in range(region[1] * 8 + 20, region[3] * 8 - 20)]
    assert GREY in edge and (255, 255, 255) in edge
    assert _colour_near(img, on_region[0] * 8, (on_region[1] + on_region[3]) * 4, GREY)  # prediction on it
    assert not _colour_near(img, on_region[0] * 8, (on_region[1] + on_region[3]) * 4, RED, radius=3)
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "ignore region" in index and "ignore 1" in index and "on ignore 1" in index and "FP 0" in index


def test_vis_refuses_predictions_that_pair_with_nothing(data, tmp_path: Path):
    gt, _ = data
    pred = tmp_path / "elsewhere.jsonl"
    pred.write_text(json.dumps({"image": "/nowhere/a.png", "objects": []}) + "\n", encoding="utf-8")
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "vis")]) == 2
    assert not (tmp_path / "vis" / "index.html").exists()


def test_vis_refuses_non_empty_out(data, tmp_path: Path):
    gt, _ = data
    out = tmp_path / "vis"
    out.mkdir()
    (out / "keep.txt").write_text("x", encoding="utf-8")
    assert main(["--gt", str(gt), "--out", str(out)]) == 2
    assert not (out / "index.html").exists()
    assert main(["--gt", str(gt), "--out", str(out), "--overwrite", "--limit", "1"]) == 0
    assert len(list(out.glob("*.png"))) == 1 and (out / "keep.txt").exists()


@pytest.mark.parametrize("grows", ["pictures", "index"])
def test_vis_on_a_full_disk_keeps_the_earlier_files_whole(data, tmp_path: Path, grows: str):
    """The PNGs and index.html were written straight into place: with --overwrite a full disk emptied the earlier
    file and left a shorter one (a torn PNG, a cut contact sheet). Each goes to a partial file renamed into place.
    `pictures`: the same records drawn larger; `index`: many more records, none with an image (no PNG, a longer
    contact sheet)."""
    import sys

    from tests.support.full_disk import can_fill_a_disk, run_on_full_disk

    if not can_fill_a_disk():
        pytest.skip("no private mount namespace here (unshare -rm): a full disk cannot be made honestly")
    gt, _ = data
    out = tmp_path / "vis"
    assert main(["--gt", str(gt), "--out", str(out), "--limit", "1", "--min_side", "48"]) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = ["--gt", str(gt), "--out", str(out), "--overwrite", "--limit", "1", "--min_side", "1024"]
    if grows == "index":
        more = tmp_path / "more.jsonl"
        more.write_text("".join(json.dumps({"images": [f"gone_{i}.png"], "width": 64, "height": 48, "objects": [
            {"bbox_2d": BOX, "desc": "x"}]}) + "\n" for i in range(60)), encoding="utf-8")
        argv = ["--gt", str(more), "--out", str(out), "--overwrite"]
    result, left = run_on_full_disk(out, [sys.executable, "-m", "src.vis", *argv])
    assert result.returncode == 3 and "No space left on device" in result.stderr, result.stderr
    assert {p.name: p.read_bytes() for p in left.iterdir()} == earlier  # every earlier file whole, no partial one


def test_vis_draws_a_coco_ground_truth_without_image_sizes(tmp_path: Path):
    # width/height are optional in a COCO image entry; the drawing divided by 0 (ZeroDivisionError, exit 3)
    Image.new("RGB", (64, 48), (128, 128, 128)).save(tmp_path / "a.png")
    x, y = BOX[:2]
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x, y, BOX[2] - x, BOX[3] - y],
                             "iscrowd": 0}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco), encoding="utf-8")
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [x, y, BOX[2] - x, BOX[3] - y],
                                "score": 0.9}]), encoding="utf-8")
    out = tmp_path / "vis"
    assert main(["--gt", str(tmp_path / "instances.json"), "--pred", str(res), "--out", str(out)]) == 0
    drawn = Image.open(next(out.glob("*.png"))).convert("RGB")
    assert drawn.size == (512, 384)  # the decoded image's size, scaled by 8
    assert _colour_near(drawn, BOX[0] * 8, (BOX[1] + BOX[3]) * 4, GREEN)  # the match, where the box is
    assert "TP 1" in (out / "index.html").read_text(encoding="utf-8")


def test_vis_limit_below_1_is_a_usage_error(data, tmp_path: Path, capsys):
    gt, _ = data  # --limit -1 drew every record but the last, without a word
    with pytest.raises(SystemExit) as exc:
        main(["--gt", str(gt), "--out", str(tmp_path / "vis"), "--limit", "-1"])
    assert exc.value.code == 2 and "argument --limit: must be >= 1, got -1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- loss curves


def test_plot_loss_curves(tmp_path: Path):
    log = tmp_path / "run" / "logging.jsonl"
    log.parent.mkdir()
    lines = [json.dumps({"loss": 2.0 - s / 10, "grad_norm": 1.0, "learning_rate": 1e-4,
                         "global_step/max_steps": f"{s}/10"}) for s in range(1, 11)]
    lines.insert(5, json.dumps({"eval_loss": 1.7, "global_step/max_steps": "5/10"}))
    lines += [json.dumps({"eval_loss": 1.2, "global_step/max_steps": "10/10"}), "{not json",
              json.dumps({"train_loss": 1.5, "global_step/max_steps": "10/10"})]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train, evals = read_loss_rows(log)
    assert [s for s, _ in train] == list(range(1, 11)) and train[0][1] == pytest.approx(1.9)
    assert evals == [(5, 1.7), (10, 1.2)]
    out = plot_loss_curves(log, tmp_path / "plots" / "loss.png")
    assert out == tmp_path / "plots" / "loss.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 100


def test_plot_loss_curves_without_losses(tmp_path: Path):
    log = tmp_path / "logging.jsonl"
    log.write_text(json.dumps({"train_runtime": 3.0, "global_step/max_steps": "1/1"}) + "\n", encoding="utf-8")
    assert plot_loss_curves(log, tmp_path / "loss.png") is None
    assert not (tmp_path / "loss.png").exists()
