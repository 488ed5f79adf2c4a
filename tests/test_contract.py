"""The JSONL contract, on real files: each kind of bad input, image handling and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from src.datasets import contract as c
from src.datasets.__main__ import main
from src.datasets.images import ImageError, image_size, load_image
from src.datasets.validation import load_records

REPO = Path(__file__).resolve().parents[1]
W, H = 40, 30


# ---------------------------------------------------------------------------- helpers


def write_image(path: Path, size=(W, H), mode="RGB", fmt="PNG", **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (10, 200, 30), "L": 128, "RGBA": (10, 200, 30, 255), "P": 3}[mode]
    Image.new(mode, size, colour).save(path, format=fmt, **save)
    return path


def record(**overrides) -> dict:
    obj = {
        "images": ["img.png"],
        "objects": [
            {"bbox_2d": [1, 2, 11, 12], "desc": "red rectangle"},
            {"quad": [20, 5, 30, 5, 30, 15, 20, 15], "desc": "text: ABC"},
        ],
        "width": W,
        "height": H,
        "summary": "2 objects: red rectangle, text: ABC",
    }
    obj.update(overrides)
    return obj


def with_object(obj: dict) -> dict:
    return record(objects=[obj])


def write_jsonl(path: Path, *rows, raw: str | None = None) -> Path:
    text = raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_image(tmp_path / "img.png")
    return tmp_path


def load_one(data_dir: Path, obj: dict, check_image: bool = True):
    path = write_jsonl(data_dir / "data.jsonl", obj)
    return load_records(path, check_image=check_image)


def only_problem(data_dir: Path, obj: dict, check_image: bool = True) -> c.Problem:
    records, problems = load_one(data_dir, obj, check_image)
    assert records == []
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# ---------------------------------------------------------------------------- valid records


def test_valid_record_parses_and_round_trips(data_dir: Path):
    records, problems = load_one(data_dir, record())
    assert problems == []
    (rec,) = records
    assert rec.image == str(data_dir / "img.png")
    assert (rec.width, rec.height, rec.clamped) == (W, H, 0)
    assert [o.kind for o in rec.objects] == ["bbox_2d", "quad"]
    assert rec.objects[0].points == (1.0, 2.0, 11.0, 12.0)
    assert rec.source == c.SourceRef(file=str(data_dir / "data.jsonl"), line=1)
    assert c.record_to_json(rec, data_dir) == record()
    assert c.record_to_json(rec, None)["images"] == [Path(data_dir / "img.png").as_posix()]


def test_empty_objects_and_missing_summary_are_fine(data_dir: Path):
    obj = record(objects=[])
    del obj["summary"]
    records, problems = load_one(data_dir, obj)
    assert problems == [] and records[0].objects == () and records[0].summary is None


def test_relative_paths_resolve_against_the_jsonl_directory(tmp_path: Path):
    write_image(tmp_path / "pics" / "a.png")
    sub = tmp_path / "lists"
    sub.mkdir()
    path = write_jsonl(sub / "d.jsonl", record(images=["../pics/a.png"]))
    records, problems = load_records(path)
    assert problems == [] and records[0].image == str(tmp_path / "pics" / "a.png")


def test_absolute_image_path(data_dir: Path):
    records, problems = load_one(data_dir, record(images=[str(data_dir / "img.png")]))
    assert problems == [] and len(records) == 1


def test_ignore_regions_and_categories_parse_and_round_trip(data_dir: Path, tmp_path: Path):
    objects = [{"bbox_2d": [1, 2, 11, 12], "desc": "person", "ignore": True, "category_id": 1,
                "supercategory": "person"},
               {"quad": [20, 5, 30, 5, 30, 15, 20, 15], "ignore": True},
               {"bbox_2d": [3, 4, 9, 9], "desc": "cat", "category_id": 17, "ignore": False}]
    path = write_jsonl(data_dir / "data.jsonl", record(objects=objects))
    (rec,), problems = load_records(path)
    assert problems == []
    crowd, illegible, cat = rec.objects
    assert (crowd.ignore, crowd.desc, crowd.category_id, crowd.supercategory) == (True, "person", 1, "person")
    assert (illegible.ignore, illegible.desc, illegible.category_id, illegible.supercategory) == (True, "", None, None)
    assert (cat.ignore, cat.category_id, cat.supercategory) == (False, 17, None)
    # written back: ignore only when true, desc only when given, nothing invented
    assert c.record_to_json(rec, data_dir)["objects"] == [objects[0], objects[1],
                                                          {"bbox_2d": [3, 4, 9, 9], "desc": "cat", "category_id": 17}]
    c.write_records(tmp_path / "again.jsonl", [rec])
    assert load_records(tmp_path / "again.jsonl")[0][0].objects == rec.objects


@pytest.mark.parametrize("quad", [[30, 15, 20, 15, 20, 5, 30, 5], [20, 15, 30, 15, 30, 5, 20, 5],
                                  [30, 5, 30, 15, 20, 15, 20, 5]], ids=["ccw-from-bottom-right", "ccw", "cw-late"])
def test_quads_are_stored_in_the_canonical_vertex_order(data_dir: Path, quad):
    """Clockwise on screen from the top-left-most vertex, whatever order the file wrote (both paths)."""
    from src.datasets.validation import validate_file

    path = write_jsonl(data_dir / "data.jsonl", with_object({"quad": quad, "desc": "t"}))
    record, _ = c.parse_record(json.loads(path.read_text()), c.SourceRef(file=str(path), line=1), data_dir,
                               check_image=False)
    table, _ = validate_file(path, check_image=False)
    assert record.objects[0].points == table[0].objects[0].points == (20, 5, 30, 5, 30, 15, 20, 15)


def test_an_ignore_region_needs_no_desc_but_an_object_does():
    with pytest.raises(ValueError, match="only on an ignore region"):
        c.GroundingObject(kind="bbox_2d", points=(0, 0, 1, 1), desc="")
    assert c.GroundingObject(kind="bbox_2d", points=(0, 0, 1, 1), desc="", ignore=True).ignore


def test_blank_lines_and_bom_are_accepted(data_dir: Path):
    line = json.dumps(record())
    path = data_dir / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + f"{line}\n\n   \n{line}\n\n".encode())
    records, problems = load_records(path)
    assert problems == []
    assert [r.source.line for r in records] == [1, 4]


def test_write_records_round_trips(data_dir: Path, tmp_path: Path):
    records, _ = load_one(data_dir, record())
    out = tmp_path / "out" / "copy.jsonl"
    out.parent.mkdir()
    c.write_records(out, records)
    assert json.loads(out.read_text())["images"] == ["../img.png"]
    again, problems = load_records(out)
    assert problems == [] and again[0].objects == records[0].objects


# ---------------------------------------------------------------------------- bad lines


def test_line_that_is_not_json(data_dir: Path):
    path = write_jsonl(data_dir / "d.jsonl", raw=json.dumps(record()) + "\n{not json\n")
    records, problems = load_records(path)
    assert len(records) == 1
    (p,) = problems
    assert (p.line, p.field) == (2, "line") and p.message.startswith("not valid JSON")


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "null", "3"])
def test_line_that_is_not_an_object(data_dir: Path, raw: str):
    (p,) = load_records(write_jsonl(data_dir / "d.jsonl", raw=raw + "\n"))[1]
    assert p.field == "line" and "must be a JSON object" in p.message


def test_line_that_is_not_utf8(data_dir: Path):
    (data_dir / "d.jsonl").write_bytes(b'{"images": ["\xff"]}\n')
    (p,) = load_records(data_dir / "d.jsonl")[1]
    assert p.field == "line" and "UTF-8" in p.message


def test_missing_jsonl_raises(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------- bad fields


def _without(key: str) -> dict:
    obj = record()
    del obj[key]
    return obj


BAD_RECORDS = [
    pytest.param(record(extra=1), "extra", "unknown key; allowed keys are: images", id="unknown"),
    pytest.param(_without("width"), "width", "required key is missing", id="no-width"),
    pytest.param(_without("objects"), "objects", "required key is missing", id="no-objects"),
    pytest.param(record(images="img.png"), "images", "exactly one image", id="images-str"),
    pytest.param(record(images=["img.png", "img.png"]), "images", "exactly one", id="two-images"),
    pytest.param(record(images=[]), "images", "exactly one image", id="no-images"),
    pytest.param(record(images=[""]), "images[0]", "non-empty string", id="empty-path"),
    pytest.param(record(width=40.0), "width", "positive integer", id="float-width"),
    pytest.param(record(height="30"), "height", "positive integer", id="str-height"),
    pytest.param(record(width=True), "width", "positive integer", id="bool-width"),
    pytest.param(record(width=0), "width", "positive integer", id="zero-width"),
    pytest.param(record(summary=3), "summary", "must be a string", id="summary"),
    pytest.param(record(objects={}), "objects", "must be a list", id="objects-dict"),
    pytest.param(record(objects=["x"]), "objects[0]", "must be a JSON object", id="object-str"),
]


@pytest.mark.parametrize(("obj", "field", "message"), BAD_RECORDS)
def test_bad_record_fields(data_dir: Path, obj: dict, field: str, message: str):
    p = only_problem(data_dir, obj, check_image=False)
    assert p.field == field and message in p.message


BOX = "objects[0].bbox_2d"
QUAD = "objects[0].quad"
BAD_OBJECTS = [
    ({"bbox_2d": [1, 2, 3], "desc": "a"}, BOX, "must be a list of 4 numbers"),
    ({"quad": [1, 2, 3, 4], "desc": "a"}, QUAD, "must be a list of 8 numbers"),
    ({"bbox_2d": [1, "2", 3, 4], "desc": "a"}, BOX, "only numbers"),
    ({"bbox_2d": [1, 2, True, 4], "desc": "a"}, BOX, "only numbers"),
    ({"bbox_2d": [1, 2, math.nan, 4], "desc": "a"}, BOX, "finite"),
    ({"bbox_2d": [1, 2, math.inf, 4], "desc": "a"}, BOX, "finite"),
    ({"quad": [0, 0, -math.inf, 0, 1, 1, 0, 1], "desc": "a"}, QUAD, "finite"),
    ({"bbox_2d": [5, 2, 5, 8], "desc": "a"}, BOX, "zero-area box (x1 == x2)"),
    ({"bbox_2d": [1, 6, 8, 6], "desc": "a"}, BOX, "zero-area box (y1 == y2)"),
    ({"bbox_2d": [9, 2, 3, 8], "desc": "a"}, BOX, "x2 < x1: corners are swapped"),
    ({"bbox_2d": [1, 9, 3, 2], "desc": "a"}, BOX, "y2 < y1: corners are swapped"),
    ({"bbox_2d": [1, 2, 42, 8], "desc": "a"}, BOX, "outside the image [0, 40] x [0, 30]"),
    ({"bbox_2d": [-1.5, 2, 5, 8], "desc": "a"}, BOX, "outside the image"),
    ({"quad": [0, 0, 5, 0, 5, 0, 0, 5], "desc": "a"}, QUAD, "invalid quad: repeated vertices"),
    ({"quad": [0, 0, 5, 5, 5, 0, 0, 5], "desc": "a"}, QUAD, "invalid quad: self-crossing"),
    ({"quad": [0, 0, 1, 1, 2, 2, 3, 3], "desc": "a"}, QUAD, "invalid quad: zero area"),
    (
        {"bbox_2d": [1, 2, 3, 4], "quad": [0, 0, 5, 0, 5, 5, 0, 5], "desc": "a"},
        "objects[0]",
        "exactly one of bbox_2d, quad, point_2d or polygon, found both",
    ),
    ({"desc": "a"}, "objects[0]", "exactly one of bbox_2d, quad, point_2d or polygon, found neither"),
    ({"bbox_2d": [1, 2, 3, 4], "desc": ""}, "objects[0].desc", "non-empty string"),
    ({"bbox_2d": [1, 2, 3, 4], "desc": "  "}, "objects[0].desc", "non-empty string"),
    ({"bbox_2d": [1, 2, 3, 4], "desc": 5}, "objects[0].desc", "non-empty string"),
    ({"bbox_2d": [1, 2, 3, 4]}, "objects[0].desc", "required key is missing"),
    (
        {"bbox_2d": [1, 2, 3, 4], "desc": "a", "label": "a"},
        "objects[0].label",
        "unknown key; allowed keys are: bbox_2d, quad, point_2d, polygon, desc, ignore, category_id, supercategory",
    ),
    ({"bbox_2d": [1, 2, 3, 4], "desc": "a", "ignore": 1}, "objects[0].ignore", "must be true or false"),
    ({"bbox_2d": [1, 2, 3, 4], "ignore": False}, "objects[0].desc", "only an object with \"ignore\": true"),
    ({"bbox_2d": [1, 2, 3, 4], "ignore": True, "desc": ""}, "objects[0].desc", "non-empty string"),
    ({"bbox_2d": [1, 2, 3, 4], "desc": "a", "category_id": "3"}, "objects[0].category_id", "must be an integer"),
    ({"bbox_2d": [1, 2, 3, 4], "desc": "a", "category_id": 2.0}, "objects[0].category_id", "must be an integer"),
    ({"bbox_2d": [1, 2, 3, 4], "desc": "a", "category_id": True}, "objects[0].category_id", "must be an integer"),
    ({"bbox_2d": [1, 2, 3, 4], "desc": "a", "category_id": -(2**63)}, "objects[0].category_id", "64-bit"),
    ({"bbox_2d": [1, 2, 3, 4], "desc": "a", "supercategory": ""}, "objects[0].supercategory", "non-empty"),
]


@pytest.mark.parametrize(("obj", "field", "message"), BAD_OBJECTS)
def test_bad_objects(data_dir: Path, obj: dict, field: str, message: str):
    p = only_problem(data_dir, with_object(obj))
    assert p.field == field
    assert message in p.message


def test_nan_and_infinity_literals_in_the_file_are_rejected(data_dir: Path):
    raw = json.dumps(record()).replace("[1, 2, 11, 12]", "[1, NaN, 11, Infinity]")
    (p,) = load_records(write_jsonl(data_dir / "d.jsonl", raw=raw + "\n"))[1]
    assert p.field == BOX and "finite" in p.message
    assert str(p).endswith("(no NaN or Infinity) ([1, NaN, 11, Infinity])")


def test_an_integer_beyond_any_float_is_a_problem_not_a_crash(data_dir: Path):
    raw = json.dumps(record()).replace("[1, 2, 11, 12]", "[1, 2, 1" + "0" * 400 + ", 12]")
    good = json.dumps(record())
    records, problems = load_records(write_jsonl(data_dir / "d.jsonl", raw=f"{good}\n{raw}\n{good}\n"))
    assert len(records) == 2 and [r.source.line for r in records] == [1, 3]  # its chunk's others stay valid
    (p,) = problems
    assert (p.line, p.field, p.message) == (2, BOX, "holds a number too large for a coordinate")


def test_coordinates_within_one_pixel_outside_are_clamped_and_counted(data_dir: Path):
    obj = with_object({"bbox_2d": [-0.5, -1, 40.75, 31], "desc": "a"})
    records, problems = load_one(data_dir, obj)
    assert problems == []
    assert records[0].objects[0].points == (0.0, 0.0, 40.0, 30.0)
    assert records[0].clamped == 4


def test_clamping_that_leaves_a_zero_area_box_is_a_problem(data_dir: Path):
    p = only_problem(data_dir, with_object({"bbox_2d": [40.2, 2, 40.9, 8], "desc": "a"}))
    assert "zero-area box" in p.message


def test_every_problem_is_reported(data_dir: Path):
    obj = record(width=-1, extra=True, images=["missing.png"])
    obj["objects"] = [{"bbox_2d": [9, 2, 3, 8], "desc": ""}, {"quad": [0] * 8, "desc": "x"}]
    _, problems = load_one(data_dir, obj)
    fields = sorted(p.field for p in problems)
    assert fields == sorted(["extra", "width", "objects[0].desc", "objects[0].bbox_2d", "objects[1].quad", "images[0]"])


# ---------------------------------------------------------------------------- images


def test_missing_image(data_dir: Path):
    p = only_problem(data_dir, record(images=["nope.png"]))
    assert (p.field, p.message) == ("images[0]", "file not found")
    assert p.value == str(data_dir / "nope.png")


def test_missing_image_is_not_checked_without_check_image(data_dir: Path):
    records, problems = load_one(data_dir, record(images=["nope.png"]), check_image=False)
    assert problems == [] and len(records) == 1


def test_truncated_image(data_dir: Path):
    full = write_image(data_dir / "full.png", size=(64, 64), mode="RGB")
    Image.effect_noise((64, 64), 50).save(full)  # noise does not compress to a few bytes
    data = full.read_bytes()
    (data_dir / "cut.png").write_bytes(data[: len(data) // 2])
    p = only_problem(data_dir, record(images=["cut.png"]))
    assert p.field == "images[0]" and p.message.startswith("cannot decode image")


def test_unreadable_image(data_dir: Path):
    (data_dir / "junk.png").write_bytes(b"this is not an image")
    p = only_problem(data_dir, record(images=["junk.png"]))
    assert p.field == "images[0]" and p.message.startswith("cannot open image")


def test_size_disagreeing_with_the_image(data_dir: Path):
    p = only_problem(data_dir, record(width=41, objects=[]))
    assert p.field == "width/height"
    assert "record says 41x30 but the image is 40x30" in p.message


def _exif_jpeg(path: Path, stored_size, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return write_image(path, size=stored_size, fmt="JPEG", exif=exif.tobytes())


def test_exif_rotated_jpeg_uses_the_displayed_frame(data_dir: Path):
    _exif_jpeg(data_dir / "rot.jpg", (H, W), 6)  # stored 30x40, displayed 40x30
    assert image_size(data_dir / "rot.jpg") == (W, H)
    assert load_image(data_dir / "rot.jpg").size == (W, H)
    records, problems = load_one(data_dir, record(images=["rot.jpg"]))
    assert problems == [] and len(records) == 1
    p = only_problem(data_dir, record(images=["rot.jpg"], width=H, height=W, objects=[]))
    assert "record says 30x40 but the image is 40x30 (after EXIF orientation)" in p.message


@pytest.mark.parametrize("orientation", range(1, 9))
def test_image_size_agrees_with_load_image(tmp_path: Path, orientation: int):
    path = _exif_jpeg(tmp_path / "o.jpg", (W, H), orientation)
    assert image_size(path) == load_image(path).size


@pytest.mark.parametrize("mode", ["L", "P", "RGBA"])
def test_other_modes_load_as_rgb(tmp_path: Path, mode: str):
    path = write_image(tmp_path / f"{mode}.png", mode=mode)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (W, H)
    assert image_size(path) == (W, H)


def test_transparent_pixels_become_white(tmp_path: Path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 200, 0, 0])
    pal.save(tmp_path / "p.png", transparency=0)
    assert load_image(tmp_path / "p.png").getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_and_16bit_load_as_rgb(tmp_path: Path):
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").mode == "RGB"
    Image.new("I;16", (4, 3), 65535).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").getpixel((0, 0)) == (255, 255, 255)


def test_image_errors_name_the_path(tmp_path: Path):
    with pytest.raises(ImageError, match="nope.png: file not found"):
        image_size(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)


# ---------------------------------------------------------------------------- data types


def test_problem_str_format():
    p = c.Problem(file="/d/a.jsonl", line=3, field="objects[0].bbox_2d", message="bad", value=[1])
    assert str(p) == "/d/a.jsonl:3: objects[0].bbox_2d: bad ([1])"
    assert str(c.Problem(file="f", line=1, field="width", message="missing")) == "f:1: width: missing"
    long = c.Problem(file="f", line=1, field="x", message="m", value="y" * 500)
    assert len(str(long)) < 120


def test_dataclasses_are_frozen_and_keyword_only():
    obj = c.GroundingObject(kind="bbox_2d", points=(0.0, 0.0, 1.0, 1.0), desc="a")
    with pytest.raises(AttributeError):
        obj.desc = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.SourceRef("f", 1)  # type: ignore[misc]
    with pytest.raises(ValueError, match="bbox_2d needs 4 values, got 3"):
        c.GroundingObject(kind="bbox_2d", points=(0.0, 0.0, 1.0), desc="a")
    with pytest.raises(ValueError, match="kind must be one of"):
        c.GroundingObject(kind="box", points=(0.0, 0.0, 1.0, 1.0), desc="a")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- CLI


def test_cli_valid_file(data_dir: Path, capsys):
    path = write_jsonl(data_dir / "ok.jsonl", record(), record(objects=[]))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 2 records, 2 valid, 0 invalid" in out
    assert "1 bbox_2d, 1 quad" in out


def test_cli_prints_every_problem_in_the_exact_format(data_dir: Path, capsys):
    bad = record(objects=[{"bbox_2d": [9, 2, 3, 8], "desc": "a"}, {"desc": "b"}])
    path = write_jsonl(data_dir / "bad.jsonl", raw="\n".join([json.dumps(record()), json.dumps(bad), "oops"]) + "\n")
    assert main(["validate", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    abs_path = os.path.abspath(path)
    assert lines[:3] == [
        f"{abs_path}:2: objects[0].bbox_2d: x2 < x1: corners are swapped; write [x1, y1, x2, y2] "
        "with x1 < x2 and y1 < y2 ([9, 2, 3, 8])",
        f"{abs_path}:2: objects[1]: needs exactly one of bbox_2d, quad, point_2d or polygon, found neither",
        f'{abs_path}:3: line: not valid JSON: Expecting value at column 1 ("oops")',
    ]
    assert lines[3].startswith(f"{abs_path}: 3 records, 1 valid, 2 invalid")


def test_cli_several_files_and_a_total(data_dir: Path, capsys):
    a = write_jsonl(data_dir / "a.jsonl", record())
    b = write_jsonl(data_dir / "b.jsonl", record(width=0))
    assert main(["validate", str(a), str(b)]) == 1
    assert "total: 2 records, 1 valid, 1 invalid" in capsys.readouterr().out


def test_cli_missing_file_exits_2(tmp_path: Path, capsys):
    assert main(["validate", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err


def test_cli_runs_as_a_module(data_dir: Path):
    path = write_jsonl(data_dir / "bad.jsonl", record(width=0))
    proc = subprocess.run(
        [sys.executable, "-m", "src.datasets", "validate", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{path}:1: width: must be a positive integer (pixels) (0)" in proc.stdout


def test_the_chunked_numpy_checks_agree_with_checking_record_by_record(tmp_path, monkeypatch):
    """Validation checks a chunk of lines with numpy; on any doubt `parse_record` decides. Both must give
    the same records, clamps and problems as `parse_record` on every line, valid and invalid alike."""
    import random

    from src.datasets import validation

    rng = random.Random(7)
    choices = [
        lambda: {"bbox_2d": [rng.uniform(-1.5, 50), rng.uniform(-1.5, 30), rng.uniform(50, 101.5),
                             rng.uniform(30, 81.5)], "desc": "box"},
        lambda: {"quad": [10, 10, 60, 12, 58, 50, 12, 48], "desc": "标签"},
        lambda: {"quad": [10, 10, 60, 50, 60, 10, 10, 50], "desc": "bow-tie"},
        lambda: {"quad": [10, 10, 10, 10, 60, 50, 12, 48], "desc": "repeated"},
        lambda: {"bbox_2d": [30, 20, 10, 40], "desc": "swapped"},
        lambda: {"bbox_2d": [10, 20, 10, 40], "desc": "flat"},
        lambda: {"bbox_2d": [10, 20, 30, True], "desc": "bool"},
        lambda: {"bbox_2d": [10, 20, 30, 40], "desc": "  "},
        lambda: {"bbox_2d": [10, 20, 30, 40], "quad": [1, 1, 2, 1, 2, 2, 1, 2], "desc": "both"},
        lambda: {"bbox_2d": [-3, 20, 30, 40], "desc": "far outside"},
        lambda: {"bbox_2d": [10, 20, 30], "desc": "short"},
        lambda: {"bbox_2d": [10, 20, 30, 40], "desc": "x", "score": 1},
        lambda: {"quad": [0, 0, 100, 0, 100, 80, 0, 80.5], "desc": "edge"},
        lambda: {"bbox_2d": [5, 5, 40, 40], "desc": "crowd", "ignore": True, "category_id": 3,
                 "supercategory": "vehicle"},
        lambda: {"quad": [10, 10, 60, 12, 58, 50, 12, 48], "ignore": True},
        lambda: {"quad": [58, 50, 60, 12, 10, 10, 12, 48], "desc": "box"},  # counter-clockwise, from elsewhere
        lambda: {"bbox_2d": [5, 5, 40, 40], "ignore": False},
        lambda: {"bbox_2d": [5, 5, 40, 40], "desc": "x", "ignore": "yes"},
        lambda: {"bbox_2d": [5, 5, 40, 40], "desc": "x", "category_id": 2.5},
        lambda: {"bbox_2d": [5, 5, 40, 40], "desc": "box", "supercategory": rng.choice(["animal", "food"])},
    ]
    lines = []
    for _ in range(300):
        objects = [rng.choice(choices)() for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.6:  # most records are clean, as in real data
            objects = [o for o in objects if o.get("desc") in ("box", "标签", "edge", "crowd")]
        lines.append(json.dumps({"images": ["a.png"], "objects": objects, "width": 100, "height": 80},
                                ensure_ascii=False))
    lines.insert(5, json.dumps({"images": ["a.png"], "objects": [{"bbox_2d": [1, 2, "3", 4], "desc": "text"}],
                                "width": 100, "height": 80}))  # a string among numbers: its chunk's slow branch
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    structured = sum(validation._structure(json.loads(line)) is not None for line in lines)
    assert 100 < structured < 300  # the chunk path decided most records, not all
    monkeypatch.setattr(validation, "CHUNK_LINES", 64)  # several chunks
    fast = load_records(path, check_image=False)
    by_record, problems = [], []
    for number, line in enumerate(lines, start=1):
        record, found = c.parse_record(json.loads(line), c.SourceRef(file=str(path), line=number), tmp_path,
                                       check_image=False)
        problems += found
        by_record += [record] if record else []
    assert fast[0] == by_record and [r.clamped for r in fast[0]] == [r.clamped for r in by_record]
    assert [str(p) for p in fast[1]] == [str(p) for p in problems]
    assert len(fast[0]) > 100 and len(fast[1]) > 50 and sum(r.clamped for r in by_record) > 10
    kept = [o for r in by_record for o in r.objects]
    assert any(o.ignore and not o.desc for o in kept) and any(o.supercategory == "food" for o in kept)
    assert any(o.category_id == 3 for o in kept)


def test_a_large_file_validated_by_several_processes_gives_what_one_process_gives(tmp_path, monkeypatch):
    from src.datasets import validation
    from src.datasets.columns import RecordTable
    from src.datasets.loading import validated_records
    from src.datasets.synth import write_synthetic_dataset
    from src.datasets.verdicts import VerdictStore

    write_synthetic_dataset(tmp_path / "data", n=12, val_fraction=0.0)
    lines = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    bad = json.loads(lines[3])
    bad["width"] = 0
    unicode = json.loads(lines[5])
    unicode["objects"][0]["desc"] = "größer 标签"  # a description only one chunk holds
    # \ufeff and a blank line: the line numbers must survive the split into chunks.
    text = "\ufeff" + "\n".join(lines[:3] + [json.dumps(bad), "", "not json"] + lines[4:] * 700
                                 + [json.dumps(unicode, ensure_ascii=False)]) + "\n"
    path = tmp_path / "data" / "big.jsonl"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(validation, "CHUNK_LINES", 1000)  # several chunks, one ending mid-way
    monkeypatch.setattr(validation, "RANGE_BYTES", 100_000)  # several workers' pieces, each ending mid-chunk
    serial = validated_records(path, workers=1)
    parallel = validated_records(path, workers=2, parallel_min_bytes=0, store=VerdictStore(tmp_path / "store"))
    assert isinstance(parallel[0], RecordTable) and len(serial[0]) > 5000
    assert list(parallel[0]) == list(serial[0])
    assert [str(p) for p in parallel[1]] == [str(p) for p in serial[1]] and len(serial[1]) == 2
    stored = validated_records(path, store=VerdictStore(tmp_path / "store"))  # the merged columns were stored
    assert stored[2] and list(stored[0]) == list(serial[0])


@pytest.mark.parametrize(("sep", "end"), [("\n", "\n"), ("\n", ""), ("\r\n", "\r\n")],
                         ids=["newline", "no-final-newline", "crlf"])
def test_byte_ranges_give_the_numbered_lines_reading_the_file_gives(tmp_path, sep, end):
    from src.datasets.validation import byte_ranges, numbered_range

    lines = [f'{{"a": {i}}}' + "  " * (i % 7) for i in range(500)] + ["", "größer 标签"]
    path = tmp_path / "lines.jsonl"
    path.write_bytes(("\ufeff" + sep.join(lines) + end).encode("utf-8"))
    with path.open("rb") as fh:  # the lines as iterating over the file gives them, BOM removed
        expected = [(n, raw[3:] if n == 1 else raw) for n, raw in enumerate(fh, start=1)]
    pieces = list(byte_ranges(str(path), 1000))
    assert len(pieces) > 5 and pieces[-1][1] == path.stat().st_size
    assert [item for piece in pieces for item in numbered_range(str(path), *piece)] == expected
    (tmp_path / "empty.jsonl").touch()
    assert list(byte_ranges(str(tmp_path / "empty.jsonl"))) == []


# ---------------------------------------------------------------------------- ignore regions in training


def test_training_leaves_ignore_regions_out_of_answers_and_all_ignored_records_out_of_samples(tmp_path):
    from src.config import load_project_config
    from src.datasets.builders import ROW_GEOMETRY_KEY
    from src.datasets.columns import all_ignored
    from src.datasets.loading import ConcatRecords
    from src.datasets.plan import plan_data
    from tests.config_helpers import make_data, write_config_tree

    data = tmp_path / "data"
    make_data(data, n=8)
    train = data / "train.jsonl"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    assert len(rows) >= 4 and all(len(r["objects"]) >= 2 for r in rows[:3])
    for obj in rows[1]["objects"]:
        obj["ignore"] = True  # every object ignored: left out, listed
    rows[2]["objects"][0]["ignore"] = True  # one of several: out of the answer only
    rows[3]["objects"] = []  # no object at all: still trained, as the answer []
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = plan_data(load_project_config(write_config_tree(tmp_path / "cfg", data_dir=data).config))
    sources = [str(group[0].source) for group, _ in plan.train_samples]
    assert len(sources) == len(rows) - 1 and f"{train}:2" not in sources and f"{train}:4" in sources
    assert plan.all_ignored == [("custom.train_jsonl", [f"{train}:2"])]
    assert "custom.train_jsonl: 1 record(s) left out of the samples, all objects ignored" in plan.summary()
    group, focus = plan.train_samples[1]  # the record of line 3
    row = plan.builder.build(group, **focus)
    answer = json.loads(row["messages"][-1]["content"])
    assert len(answer) == len(rows[2]["objects"]) - 1
    geometry = json.loads(row[ROW_GEOMETRY_KEY])[0]["objects"]
    from src.config.prompts import PROMPT_SCHEMES, get_prompt_scheme
    from src.datasets.builders import make_builder

    described = [name for name, scheme in PROMPT_SCHEMES.items() if scheme.builder == "description"]
    assert described  # a desc held only by ignore regions is never asked about (its answer would be [])
    if described:
        asking = make_builder(get_prompt_scheme(described[0]), "norm1000", "reading")
        only_ignored = dataclasses.replace(group[0], objects=tuple(
            dataclasses.replace(o, desc="crowd") if o.ignore else o for o in group[0].objects))
        assert "crowd" not in [f["desc"] for f in asking.focuses([only_ignored])]
    assert [bool(o.get("ignore")) for o in geometry] == [bool(o.get("ignore")) for o in rows[2]["objects"]]
    # the columns' answer (no Record made) agrees with the records', also across parts
    table, _ = validation_table(train)
    listed = list(table)
    assert all_ignored(table).tolist() == all_ignored(listed).tolist() == [1]
    assert all_ignored(ConcatRecords([table, listed])).tolist() == [1, len(listed) + 1]


def validation_table(path):
    from src.datasets.validation import validate_file

    return validate_file(path, check_image=False)


def test_validate_counts_ignore_regions_and_rows_leave_out_records_of_only_ignore_regions(tmp_path, capsys):
    from tests.config_helpers import make_data, write_config_tree

    data = tmp_path / "data"
    make_data(data, n=6)
    train = data / "train.jsonl"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    for obj in rows[0]["objects"]:
        obj["ignore"] = True
    rows[1]["objects"][0]["ignore"] = True
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ignored = len(rows[0]["objects"]) + 1
    assert main(["validate", str(train)]) == 0
    text = capsys.readouterr().out
    assert f"({ignored} of them ignore regions; 1 records of only ignore regions, not trained)" in text
    config = write_config_tree(tmp_path / "cfg", data_dir=data).config
    out = tmp_path / "rows.jsonl"
    assert main(["rows", "--config", str(config), "--split", "train", "--out", str(out)]) == 0
    assert f"1 record(s) left out, all objects ignored: {train}:1" in capsys.readouterr().out
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == len(rows) - 1
    assert len(json.loads(written[0]["messages"][-1]["content"])) == len(rows[1]["objects"]) - 1
