"""ICDAR-2015-style conversion (`python -m src.datasets convert icdar`): mmocr's real ground-truth files
(tests/data/icdar2015_mmocr) and generated ones with a BOM, commas in transcriptions and broken lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from src.datasets.__main__ import main
from src.datasets.columns import all_ignored
from src.datasets.convert_icdar import convert_icdar_file
from src.datasets.validation import load_records

REAL = Path(__file__).resolve().parent / "data" / "icdar2015_mmocr"
ICDAR_SIZE = (1280, 720)  # every ICDAR 2015 image


def real_images(folder: Path) -> Path:
    """Blank stand-ins of the size of ICDAR 2015's images for the shipped ground-truth files."""
    folder.mkdir(parents=True, exist_ok=True)
    for gt in REAL.glob("gt_*.txt"):
        Image.new("RGB", ICDAR_SIZE, (90, 90, 90)).save(folder / f"{gt.stem[3:]}.jpg")
    return folder


def convert(*args: str) -> int:
    return main(["convert", "icdar", *args])


def test_mmocrs_icdar_2015_sample_converts_with_illegible_regions_as_ignore_quads(tmp_path, capsys):
    images = real_images(tmp_path / "imgs")
    out = tmp_path / "out" / "icdar.jsonl"
    assert convert("--gt", str(REAL), "--images", str(images), "--out", str(out), "--desc", "text: {text}") == 0
    text = capsys.readouterr().out
    lines = {name: (REAL / name).read_text().splitlines() for name in ("gt_img_1.txt", "gt_img_2.txt",
                                                                        "gt_img_5.txt", "gt_img_10.txt")}
    illegible = sum(line.endswith(",###") for rows in lines.values() for line in rows)
    words = sum(len(rows) for rows in lines.values()) - illegible
    assert (words, illegible) == (9, 10)
    assert f"words: {words}" in text and f"### regions -> ignore regions (quads): {illegible}" in text
    assert "images whose every region is ### (left out of training, see the data summary): 1" in text
    records, problems = load_records(out)
    assert problems == []
    assert [Path(r.image).name for r in records] == ["img_1.jpg", "img_2.jpg", "img_5.jpg", "img_10.jpg"]
    first = records[0]
    assert (first.width, first.height) == ICDAR_SIZE and len(first.objects) == len(lines["gt_img_1.txt"])
    theatre = first.objects[0]  # 377,117,463,117,465,130,378,130,Genaxis Theatre: already canonical
    assert (theatre.kind, theatre.points, theatre.desc, theatre.ignore) == (
        "quad", (377, 117, 463, 117, 465, 130, 378, 130), "text: Genaxis Theatre", False)
    ignored = [o for r in records for o in r.objects if o.ignore]
    assert len(ignored) == illegible and all(o.kind == "quad" and o.desc == "" for o in ignored)
    # 374,1,494,0,492,85,372,86: the top-left-most vertex is (374, 1) (x + y = 375; (494, 0) has 494)
    assert first.objects[6].points == (374, 1, 494, 0, 492, 85, 372, 86)
    assert all_ignored(records).tolist() == [2]  # img_5: only ### regions, left out of training


def test_bom_commas_broken_lines_and_bow_ties_are_each_handled_and_said(tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (100, 80), (90, 90, 90)).save(images / "img_7.png")
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "gt_img_7.txt").write_bytes("\ufeff".encode() + "\n".join([
        "30,10,60,10,60,20,30,20,Hello, world",  # a comma in the transcription
        "10,50,10,40,40,40,40,50,###",  # counter-clockwise from bottom-left: canonical order
        "0,0,50,0,50,10,0,10,café",
        "",
        "1,2,3,4,5,6,7,text",  # 7 numbers
        "1,2,3,x,5,6,7,8,word",  # a coordinate that is no number
        "90,70,102,70,102,79,90,79,edge",  # 2 px outside
        "10,60,20,70,20,60,10,70,bow",  # self-crossing: its bounding box
        "99.5,0,100.5,0,100.5,5,99.5,5,sliver",  # 0.5 px outside: clamped
    ]).encode("utf-8") + b"\n")
    (gt / "gt_img_8.txt").write_text("1,1,5,1,5,5,1,5,orphan\n")  # no image
    out = tmp_path / "out.jsonl"
    assert convert("--gt", str(gt), "--images", str(images), "--out", str(out)) == 1
    text = capsys.readouterr().out
    assert f"{gt / 'gt_img_7.txt'}:5: needs 8 coordinates and a transcription" in text
    assert f"{gt / 'gt_img_7.txt'}:6: coordinates must be 8 finite numbers (1,2,3,x,5,6,7,8,word)" in text
    assert f"{gt / 'gt_img_7.txt'}:7: a point lies outside the image [0, 100] x [0, 80] by more than 1 px" in text
    assert f"{gt / 'gt_img_8.txt'}: no image img_8.*" in text
    assert "ground-truth files skipped: 1, lines skipped: 3" in text
    for note in ("words: 4", "### regions -> ignore regions (quads): 1", "coordinates clamped (within 1 px): 2",
                 "quads not proper quadrilaterals -> their bounding box: 1", "files starting with a UTF-8 BOM: 1"):
        assert note in text
    (record,), problems = load_records(out)
    assert problems == []
    assert [(o.kind, o.points, o.desc, o.ignore) for o in record.objects] == [
        ("quad", (30, 10, 60, 10, 60, 20, 30, 20), "text", False),
        ("quad", (10, 40, 40, 40, 40, 50, 10, 50), "", True),
        ("quad", (0, 0, 50, 0, 50, 10, 0, 10), "text", False),
        ("bbox_2d", (10, 60, 20, 70), "text", False),
        ("quad", (99.5, 0, 100, 0, 100, 5, 99.5, 5), "text", False),
    ]
    # the transcription is kept when asked, commas and accents included
    convert_icdar_file(gt / "gt_img_7.txt", images, tmp_path / "spotting.jsonl", desc="text: {text}")
    descs = [o.get("desc") for o in json.loads((tmp_path / "spotting.jsonl").read_text())["objects"]]
    assert descs[0] == "text: Hello, world" and descs[2] == "text: café" and descs[1] is None


def test_the_command_refuses_overwriting_and_missing_inputs(tmp_path, capsys):
    images = real_images(tmp_path / "imgs")
    out = tmp_path / "out.jsonl"
    out.write_text("keep\n")
    assert convert("--gt", str(REAL / "gt_img_2.txt"), "--images", str(images), "--out", str(out)) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep\n"
    assert convert("--gt", str(REAL / "gt_img_2.txt"), "--images", str(images), "--out", str(out), "--overwrite") == 0
    assert len(out.read_text().splitlines()) == 1
    assert convert("--gt", str(tmp_path / "none"), "--images", str(images), "--out", str(tmp_path / "o.jsonl")) == 2
    assert "no ground-truth file" in capsys.readouterr().err
    assert convert("--gt", str(REAL), "--images", str(tmp_path / "nodir"), "--out", str(tmp_path / "o.jsonl")) == 2
    with pytest.raises(FileExistsError):
        convert_icdar_file(REAL, images, out)


def test_a_full_disk_keeps_the_earlier_records_whole_and_leaves_no_partial_file(tmp_path):
    """As for COCO: the records go through the shared write_then_rename, so on a really full disk the command
    ends with the disk's message, the earlier file is as it was, and no partial file is left behind."""
    import sys

    from tests.support.full_disk import can_fill_a_disk, run_on_full_disk

    if not can_fill_a_disk():
        pytest.skip("no private mount namespace here (unshare -rm): a full disk cannot be made honestly")
    images = real_images(tmp_path / "imgs")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "icdar.jsonl").write_text("earlier\n")
    result, left = run_on_full_disk(folder, [sys.executable, "-m", "src.datasets", "convert", "icdar", "--gt",
                                             str(REAL), "--images", str(images), "--out", str(folder / "icdar.jsonl"),
                                             "--overwrite"], size="4k")
    assert result.returncode != 0
    assert "No space left on device" in result.stderr
    assert sorted(p.name for p in left.iterdir()) == ["icdar.jsonl"]
    assert (left / "icdar.jsonl").read_text() == "earlier\n"
