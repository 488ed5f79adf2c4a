"""COCO conversion: a small COCO file with real PNGs becomes contract-valid JSONL, and every
skipped image or annotation is reported and reflected in the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from src.datasets.__main__ import main
from src.datasets.convert_coco import coco_to_records, convert_coco_file
from src.datasets.images import ImageError
from src.datasets.validation import load_records

CATEGORIES = [{"id": 1, "name": "car", "supercategory": "vehicle"}, {"id": 2, "name": "sign"},
              {"id": 3, "name": "crowd"}]
REPO = Path(__file__).resolve().parents[1]


def coco_fixture(root: Path, *, missing: bool = False, bad_ann: bool = False) -> tuple[Path, Path]:
    """Write ``root/images/*.png`` and ``root/ann.json``; return (ann file, images dir)."""
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (64, 48), (90, 90, 90)).save(images / "a.png")
    Image.new("RGB", (32, 40), (90, 90, 90)).save(images / "sub" / "b.png")
    Image.new("RGB", (20, 20), (90, 90, 90)).save(images / "empty.png")
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "sub/b.png", "width": 32, "height": 40},
            {"id": 3, "file_name": "empty.png", "width": 20, "height": 20},
        ],
        "categories": CATEGORIES,
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "bbox": [2, 3, 10, 5],
                "iscrowd": 0,
                "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8, 2, 5]],
            },
            # 4-point polygon, counter-clockwise and starting bottom-left -> canonical quad
            {
                "id": 11,
                "image_id": 1,
                "category_id": 2,
                "bbox": [20, 10, 10, 10],
                "iscrowd": 0,
                "segmentation": [[20, 20, 30, 20, 30, 10, 20, 10]],
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 3,
                "bbox": [1.5, 2, 10, 20.25],
                "iscrowd": 1,
                "segmentation": {"counts": [0, 5, 10], "size": [40, 32]},
            },
            # a crowd annotation: an ignore region, of the same geometry rule
            {
                "id": 13,
                "image_id": 2,
                "category_id": 1,
                "bbox": [0, 0, 4, 4],
                "iscrowd": 1,
                "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]],
            },
            # 0.5 px past the right edge: clamped, not skipped
            {"id": 14, "image_id": 2, "category_id": 1, "bbox": [22, 30, 10.5, 5], "iscrowd": 0},
        ],
    }
    if missing:
        coco["images"].append({"id": 4, "file_name": "gone.png", "width": 10, "height": 10})
        coco["annotations"].append({"id": 15, "image_id": 4, "category_id": 1, "bbox": [0, 0, 5, 5]})
    if bad_ann:
        coco["annotations"].append({"id": 16, "image_id": 1, "category_id": 99, "bbox": [0, 0, 5, 5]})
    ann = root / "ann.json"
    ann.write_text(json.dumps(coco))
    return ann, images


@pytest.mark.parametrize("polygons", ["bbox", "quad"])
def test_converted_file_is_valid_and_faithful(tmp_path, polygons):
    ann, images = coco_fixture(tmp_path)
    out = tmp_path / "out" / "train.jsonl"
    result = convert_coco_file(ann, images, out, polygons=polygons)
    assert not result.skipped_anything and result.problems == []
    assert (result.images_written, result.images_skipped) == (3, 0)
    common = {"crowd regions -> ignore regions": 2, "coordinates clamped (within 1 px)": 1,
              "images without annotations (objects: [])": 1}
    if polygons == "bbox":  # every mask is kept as its box, and said so
        assert result.objects_by_kind == {"bbox_2d": 5, "quad": 0}
        assert result.notes == {"crowd regions -> ignore regions": 2,
                                "polygon masks kept as their bbox (--polygons bbox)": 3,
                                "of them 4-point polygons (quads with --polygons quad)": 2,
                                "RLE masks -> bbox": 1, **common}
    else:
        assert result.objects_by_kind == {"bbox_2d": 3, "quad": 2}
        assert result.notes == {"crowd regions -> ignore regions": 2, "4-point polygons -> quad": 2,
                                "polygons of more than 4 points -> bbox": 1, "RLE masks -> bbox": 1, **common}

    records, problems = load_records(out, check_image=True)
    assert problems == [], [str(p) for p in problems]
    assert [Path(r.image).name for r in records] == ["a.png", "b.png", "empty.png"]
    a, b, empty = records
    sign = (("quad", (20.0, 10.0, 30.0, 10.0, 30.0, 20.0, 20.0, 20.0)) if polygons == "quad"  # canonical order
            else ("bbox_2d", (20.0, 10.0, 30.0, 20.0)))
    assert [(o.kind, o.points, o.desc, o.category_id, o.supercategory) for o in a.objects] == [
        ("bbox_2d", (2.0, 3.0, 12.0, 8.0), "car", 1, "vehicle"),  # a 5-point polygon keeps its bbox
        (*sign, "sign", 2, None),
    ]
    crowd_car = ("quad", (0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0)) if polygons == "quad" else ("bbox_2d",
                                                                                               (0.0, 0.0, 4.0, 4.0))
    assert [(o.kind, o.points, o.desc, o.ignore) for o in b.objects] == [
        ("bbox_2d", (1.5, 2.0, 11.5, 22.25), "crowd", True),
        (*crowd_car, "car", True),
        ("bbox_2d", (22.0, 30.0, 32.0, 35.0), "car", False),
    ]
    assert (empty.width, empty.height, empty.objects) == (20, 20, ())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["images"] for line in lines] == [["../images/a.png"], ["../images/sub/b.png"], ["../images/empty.png"]]


def test_pure_function_with_injected_sizes(tmp_path):
    coco = json.loads(coco_fixture(tmp_path)[0].read_text())
    sizes = {"a.png": (64, 48), "b.png": (32, 41)}  # b is off by one; empty.png is unreadable

    def size_fn(path: Path) -> tuple[int, int]:
        if path.name not in sizes:
            raise ImageError(path, "file not found")
        return sizes[path.name]

    records, problems = coco_to_records(coco, Path("/data/images"), Path("/data"), size_fn=size_fn, ann_file="x.json")
    assert [r["images"] for r in records] == [["images/a.png"]]
    assert problems == [
        "x.json: image id 2 (sub/b.png): size mismatch: COCO says 32x40, the file is 32x41 (after EXIF orientation)",
        "x.json: image id 3 (empty.png): file not found (/data/images/empty.png)",
    ]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ({"image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5]}, "unknown category_id"),
        ({"image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5]},
         "unknown image_id (9 (int); the images' ids are int)"),
        ({"image_id": "a1", "category_id": 1, "bbox": [0, 0, 5, 5]},
         "unknown image_id ('a1' (str); the images' ids are int)"),
        ({"image_id": 1, "category_id": "x", "bbox": [0, 0, 5, 5]}, "unknown category_id (or category without a "
                                                                  "name) ('x' (str))"),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 5]}, "bbox must be [x, y, w, h]"),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 5]}, "zero-area bbox"),
        ({"image_id": 1, "category_id": 1, "bbox": [60, 0, 10, 5]}, "bbox outside the image by more than 1 px"),
    ],
)
def test_bad_annotations_are_skipped_and_named(annotation, expected):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "categories": CATEGORIES,
        "annotations": [{"id": 5, **annotation}],
    }
    records, problems = coco_to_records(coco, Path("/d"), Path("/d"), size_fn=lambda p: (64, 48), ann_file="c.json")
    assert records[0]["objects"] == []
    assert len(problems) == 1
    assert problems[0].startswith(f"c.json: annotation id 5 (image id {annotation['image_id']}): {expected}")


def test_bow_tie_polygon_keeps_bbox():
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "categories": CATEGORIES,
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [0, 0, 10, 10],
                "segmentation": [[0, 0, 10, 10, 10, 0, 0, 10]],
            }
        ],
    }
    records, problems = coco_to_records(coco, Path("/d"), Path("/d"), size_fn=lambda p: (64, 48), polygons="quad")
    assert problems == [] and records[0]["objects"] == [{"bbox_2d": [0, 0, 10, 10], "desc": "sign", "category_id": 2}]


def test_coordinates_are_written_without_float_noise():
    # 270.78 + 68.2 is 338.97999999999996 in floats; the file's decimals add up to 338.98
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 640, "height": 480}], "categories": CATEGORIES,
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [270.78, 0.1, 68.2, 0.2]}]}
    assert 270.78 + 68.2 == 338.97999999999996 and 0.1 + 0.2 == 0.30000000000000004
    records, _ = coco_to_records(coco, Path("/d"), Path("/d"), size_fn=lambda p: (640, 480))
    assert records[0]["objects"][0]["bbox_2d"] == [270.78, 0.1, 338.98, 0.3]
    assert json.dumps(records[0]["objects"][0]["bbox_2d"]) == "[270.78, 0.1, 338.98, 0.3]"


def test_masks_of_every_kind_are_counted_in_quad_mode():
    polygon = [[0, 0, 10, 0, 10, 10, 5, 12, 0, 10]]
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}], "categories": CATEGORIES,
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 12], "segmentation": polygon},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                             "segmentation": [[0, 0, 4, 0, 4, 4], [6, 6, 10, 6, 10, 10]]},
                            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                             "segmentation": {"counts": "abc", "size": [48, 64]}},
                            {"id": 4, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10],
                             "segmentation": [[0, 0, 10, 10, 10, 0, 0, 10]]}]}
    ann_file = Path("/nowhere/x.json")
    from src.datasets.convert_coco import _Converter

    result = _Converter(coco, Path("/d"), Path("/d"), lambda p: (64, 48), str(ann_file), "quad").run()
    assert {k: v for k, v in result.notes.items() if v and k not in ("bbox_2d", "quad")} == {
        "polygons of more than 4 points -> bbox": 1, "masks of several polygons -> bbox": 1, "RLE masks -> bbox": 1,
        "4-point polygons not a proper quad -> bbox": 1}
    with pytest.raises(ValueError, match="polygons must be one of"):
        coco_to_records(coco, Path("/d"), Path("/d"), size_fn=lambda p: (64, 48), polygons="mask")


def test_a_real_coco_file_with_a_string_image_id_and_a_crowd_region(tmp_path, capsys):
    """faster_coco_eval's ignore test (tests/data/coco_ignore): image id '2299' (a string), 13 of its 14
    annotations say 2299, one is a crowd region. Every annotation is kept, the crowd one as an ignore region."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (500, 302), (90, 90, 90)).save(images / "000000002299.jpg")  # the val2017 image's size
    ann = REPO / "tests" / "data" / "coco_ignore" / "gt_ignore_test.json"
    out = tmp_path / "out.jsonl"
    assert run_cli(ann, images, out) == 0
    text = capsys.readouterr().out
    assert "objects: 14 bbox_2d, 0 quad" in text and "annotations skipped: 0" in text
    assert "crowd regions -> ignore regions: 1" in text
    assert "image ids matched across string/integer types: 13" in text
    (record,), problems = load_records(out)
    assert problems == [] and len(record.objects) == 14
    coco = json.loads(ann.read_text())
    crowd = [a for a in coco["annotations"] if a["iscrowd"]]
    assert [o.ignore for o in record.objects].count(True) == len(crowd) == 1
    assert all(o.desc == "person" and o.category_id == 1 and o.supercategory == "person" for o in record.objects)
    written = [json.loads(line) for line in out.read_text().splitlines()][0]["objects"]
    for obj, annotation in zip(written, coco["annotations"], strict=True):
        x, y, w, h = annotation["bbox"]
        assert obj["bbox_2d"][:2] == [x, y] and len(repr(obj["bbox_2d"][2])) <= len(f"{x + w:.2f}")


def test_not_coco_is_refused(tmp_path):
    with pytest.raises(ValueError, match="missing 'annotations'"):
        coco_to_records({"images": [], "categories": []}, tmp_path, tmp_path)


# ---------------------------------------------------------------------------- CLI


def run_cli(ann: Path, images: Path, out: Path, *extra: str) -> int:
    return main(["convert", "coco", "--ann", str(ann), "--images", str(images), "--out", str(out), *extra])


def test_cli_ok(tmp_path, capsys):
    ann, images = coco_fixture(tmp_path)
    assert run_cli(ann, images, tmp_path / "train.jsonl") == 0
    text = capsys.readouterr().out
    assert "wrote 3 records" in text and "images skipped: 0" in text
    assert "objects: 5 bbox_2d, 0 quad" in text and "annotations skipped: 0" in text
    assert "polygon masks kept as their bbox (--polygons bbox): 3" in text
    assert run_cli(ann, images, tmp_path / "quads.jsonl", "--polygons", "quad") == 0
    assert "objects: 3 bbox_2d, 2 quad" in capsys.readouterr().out


def test_cli_missing_image_skipped_exit_1(tmp_path, capsys):
    ann, images = coco_fixture(tmp_path, missing=True, bad_ann=True)
    out = tmp_path / "train.jsonl"
    assert run_cli(ann, images, out) == 1
    text = capsys.readouterr().out
    assert f"{ann}: image id 4 (gone.png): file not found" in text
    assert f"{ann}: annotation id 16 (image id 1): unknown category_id" in text
    assert "images skipped: 1" in text
    assert "annotations skipped: 2 (image skipped: 1, unknown category_id (or category without a name): 1)" in text
    records, problems = load_records(out, check_image=True)
    assert problems == [] and len(records) == 3  # the rest is still written, and valid


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    ann, images = coco_fixture(tmp_path)
    out = tmp_path / "train.jsonl"
    out.write_text("keep me\n")
    assert run_cli(ann, images, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
    assert run_cli(ann, images, out, "--overwrite") == 0
    assert len(out.read_text().splitlines()) == 3


def test_cli_usage_errors(tmp_path, capsys):
    ann, images = coco_fixture(tmp_path)
    assert run_cli(tmp_path / "nope.json", images, tmp_path / "o.jsonl") == 2
    assert run_cli(ann, tmp_path / "nodir", tmp_path / "o.jsonl") == 2
    ann.write_text("{not json")
    assert run_cli(ann, images, tmp_path / "o.jsonl") == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_polygons_mode_keeps_single_polygon_masks_as_polygons(tmp_path, capsys):
    """--polygons polygon: a single polygon of 3 or more points becomes a polygon in canonical order (its
    4-point ones too); several parts, RLE and a polygon that crosses itself keep their bbox, counted."""
    ann, images = coco_fixture(tmp_path)
    coco = json.loads(ann.read_text())
    coco["annotations"].append({"id": 17, "image_id": 1, "category_id": 2, "bbox": [40, 10, 10, 10],
                                "segmentation": [[40, 10, 50, 20, 50, 10, 40, 20]]})  # a bow-tie
    ann.write_text(json.dumps(coco))
    out = tmp_path / "polygons.jsonl"
    assert run_cli(ann, images, out, "--polygons", "polygon") == 0
    text = capsys.readouterr().out
    assert "objects: 3 bbox_2d, 0 quad, 3 polygon" in text
    assert "single polygons -> polygon: 3" in text and "polygons not a proper polygon -> bbox: 1" in text
    assert "RLE masks -> bbox: 1" in text
    records, problems = load_records(out, check_image=True)
    assert problems == []
    a, b, _ = records
    assert [(o.kind, o.points) for o in a.objects] == [
        ("polygon", (2.0, 3.0, 12.0, 3.0, 12.0, 8.0, 2.0, 8.0, 2.0, 5.0)),  # already clockwise from (2, 3)
        ("polygon", (20.0, 10.0, 30.0, 10.0, 30.0, 20.0, 20.0, 20.0)),  # counter-clockwise in the file
        ("bbox_2d", (40.0, 10.0, 50.0, 20.0)),
    ]
    assert [(o.kind, o.ignore) for o in b.objects] == [("bbox_2d", True), ("polygon", True), ("bbox_2d", False)]


def test_a_full_disk_keeps_the_earlier_records_whole_and_leaves_no_partial_file(tmp_path):
    """The records were written to a partial file and renamed, but a failed write left the partial file behind
    (and nothing was flushed before the rename). Through the shared write_then_rename: on a really full disk
    the command ends with the disk's message, the earlier file is as it was, and no partial file is left."""
    import sys

    from tests.support.full_disk import can_fill_a_disk, run_on_full_disk

    if not can_fill_a_disk():
        pytest.skip("no private mount namespace here (unshare -rm): a full disk cannot be made honestly")
    ann, images = coco_fixture(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "train.jsonl").write_text("earlier\n")
    result, left = run_on_full_disk(folder, [sys.executable, "-m", "src.datasets", "convert", "coco", "--ann", str(ann),
                                             "--images", str(images), "--out", str(folder / "train.jsonl"),
                                             "--overwrite"], size="4k")
    assert result.returncode != 0
    assert "No space left on device" in result.stderr
    assert sorted(p.name for p in left.iterdir()) == ["train.jsonl"]
    assert (left / "train.jsonl").read_text() == "earlier\n"
