"""Augmentation: config errors name the entry and the allowed values, and every geometric op
moves the annotations exactly where PIL moves the pixels."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from src.datasets import geometry as g
from src.datasets.augment import AugmentOp, augment, parse_augment_ops
from src.datasets.contract import GroundingObject, Record, SourceRef, parse_record, record_to_json

SIZE = (64, 48)  # not square, so a swapped width/height shows
GREY = (128, 128, 128)
RED = (220, 40, 40)
BOX = (22.0, 16.0, 40.0, 30.0)
QUAD = (26.0, 12.0, 38.0, 18.0, 35.0, 24.0, 23.0, 18.0)  # a rotated rectangle, integer corners
SOURCE = SourceRef(file="/data/train.jsonl", line=1)


# ---------------------------------------------------------------------------- helpers


def make_record(objects: list[tuple[str, tuple[float, ...]]], size=SIZE) -> Record:
    return Record(
        image="/data/images/x.png",
        width=size[0],
        height=size[1],
        objects=tuple(GroundingObject(kind=k, points=tuple(p), desc=f"obj {i}") for i, (k, p) in enumerate(objects)),
        summary="a red thing",
        source=SOURCE,
    )


def scene(kind: str) -> tuple[Image.Image, Record]:
    """A grey image with one red object whose pixels are exactly its annotation."""
    image = Image.new("RGB", SIZE, GREY)
    if kind == "bbox_2d":
        x1, y1, x2, y2 = (int(v) for v in BOX)
        ImageDraw.Draw(image).rectangle((x1, y1, x2 - 1, y2 - 1), fill=RED)
        return image, make_record([("bbox_2d", BOX)])
    # A pixel is red iff its centre lies inside the (convex) quad.
    xs, ys = np.meshgrid(np.arange(SIZE[0]) + 0.5, np.arange(SIZE[1]) + 0.5)
    pts = np.array(QUAD).reshape(4, 2)
    ends = np.roll(pts, -1, axis=0)
    cross = [(b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0]) for a, b in zip(pts, ends, strict=True)]
    inside = np.all(np.stack(cross) >= 0, axis=0) | np.all(np.stack(cross) <= 0, axis=0)
    pixels = np.asarray(image).copy()
    pixels[inside] = RED
    return Image.fromarray(pixels), make_record([("quad", QUAD)])


def red_bbox(image: Image.Image) -> np.ndarray:
    """Bounds ``[x1, y1, x2, y2]`` (exclusive) of the pixels that are at least half red."""
    rgb = np.asarray(image).astype(int)
    ys, xs = np.nonzero(rgb[..., 0] - rgb[..., 1] > (RED[0] - RED[1]) // 2)
    assert len(xs), "no red pixels left"
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def bounds(obj: GroundingObject) -> np.ndarray:
    return np.array(obj.points) if obj.kind == "bbox_2d" else g.quad8_to_xyxy([obj.points])[0]


def op(name: str, **params) -> dict:
    return {"op": name, "p": 1.0, **params}


# ---------------------------------------------------------------------------- parsing

PARSE_ERRORS = [
    ("not a list", {"op": "hflip", "p": 1}, ["custom.augment:", "must be a list"]),
    ("not a mapping", ["hflip"], ["custom.augment[0]", "string `op`", "'hflip'"]),
    (
        "unknown op",
        [op("hflip"), op("vflip"), {"op": "rotat", "p": 0.3}],
        ["custom.augment[2]: unknown op 'rotat'; allowed: hflip, vflip, rot90, rotate, scale_crop, color_jitter"],
    ),
    (
        "unknown param",
        [op("rotate", max_degree=5, max_degrees=5)],
        ["custom.augment[0]", "'max_degree'", "'rotate'", "allowed: p, max_degrees, min_visibility"],
    ),
    ("p missing", [{"op": "hflip"}], ["custom.augment[0]", "needs p in [0, 1]"]),
    ("p too big", [op("vflip", p=1.5)], ["custom.augment[0]", "p=1.5", "'vflip'", "outside [0, 1]"]),
    ("p negative", [op("vflip", p=-0.1)], ["p=-0.1", "outside [0, 1]"]),
    ("p not a number", [op("hflip", p="0.5")], ["p='0.5'", "must be a number in [0, 1]"]),
    ("p is bool", [op("hflip", p=True)], ["p=True", "must be a number"]),
    ("max_degrees missing", [op("rotate")], ["needs max_degrees in (0, 180]"]),
    ("max_degrees zero", [op("rotate", max_degrees=0)], ["max_degrees=0", "outside (0, 180]"]),
    ("max_degrees big", [op("rotate", max_degrees=200)], ["max_degrees=200", "outside (0, 180]"]),
    ("min_scale zero", [op("scale_crop", min_scale=0.0)], ["min_scale=0.0", "outside (0, 1]"]),
    (
        "min > max scale",
        [op("scale_crop", min_scale=0.9, max_scale=0.8)],
        ["custom.augment[0]", "min_scale=0.9 > max_scale=0.8", "need min_scale <= max_scale"],
    ),
    ("visibility", [op("scale_crop", min_scale=0.5, min_visibility=1.2)], ["min_visibility=1.2", "outside [0, 1]"]),
    ("jitter", [op("color_jitter", brightness=1.5)], ["brightness=1.5", "'color_jitter'", "outside [0, 1]"]),
    ("nan", [op("color_jitter", contrast=float("nan"))], ["contrast=nan", "must be a number"]),
]


@pytest.mark.parametrize(("case", "spec", "expected"), PARSE_ERRORS, ids=[c[0] for c in PARSE_ERRORS])
def test_parse_errors(case, spec, expected):
    with pytest.raises(ValueError) as info:
        parse_augment_ops(spec)
    for text in expected:
        assert text in str(info.value)


def test_parse_reports_every_problem_and_custom_where():
    with pytest.raises(ValueError) as info:
        parse_augment_ops([op("hflip", p=2), {"op": "nope", "p": 1}], where="train.augment")
    lines = str(info.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["train.augment[0]", "train.augment[1]"]


def test_parse_fills_defaults():
    spec = [
        op("hflip", p=0.5),
        op("rot90", p=0),
        op("rotate", max_degrees=5),
        op("scale_crop", min_scale=0.7),
        op("color_jitter", saturation=0.2),
    ]
    assert parse_augment_ops(spec) == [
        AugmentOp(name="hflip", p=0.5, params={}),
        AugmentOp(name="rot90", p=0.0, params={}),
        AugmentOp(name="rotate", p=1.0, params={"max_degrees": 5.0, "min_visibility": 0.5}),
        AugmentOp(name="scale_crop", p=1.0, params={"min_scale": 0.7, "max_scale": 1.0, "min_visibility": 0.5}),
        AugmentOp(name="color_jitter", p=1.0, params={"brightness": 0.0, "contrast": 0.0, "saturation": 0.2}),
    ]
    assert parse_augment_ops([]) == []


# ---------------------------------------------------------------------------- pixels and geometry agree

GEOMETRIC = [
    ("hflip", {}, 1.0),
    ("vflip", {}, 1.0),
    ("rot90", {}, 1.0),
    ("rotate", {"max_degrees": 40}, 2.0),
    ("scale_crop", {"min_scale": 0.8, "max_scale": 1.0}, 2.0),
]


@pytest.mark.parametrize("kind", ["bbox_2d", "quad"])
@pytest.mark.parametrize(("name", "params", "tolerance"), GEOMETRIC, ids=[c[0] for c in GEOMETRIC])
def test_geometry_follows_pixels(kind, name, params, tolerance):
    image, record = scene(kind)
    ops = parse_augment_ops([op(name, **params)])
    for seed in range(4):
        out, rec, report = augment(image, record, ops, np.random.default_rng(seed))
        assert [a["op"] for a in report["applied"]] == [name]
        assert report["dropped"] == 0
        assert (rec.width, rec.height) == out.size
        (obj,) = rec.objects
        assert obj.kind == kind
        np.testing.assert_allclose(bounds(obj), red_bbox(out), atol=tolerance, err_msg=f"seed {seed}: {report}")


def test_rot90_swaps_size_for_odd_k():
    image, record = scene("bbox_2d")
    ops = parse_augment_ops([op("rot90")])
    ks = set()
    for seed in range(12):
        out, rec, report = augment(image, record, ops, np.random.default_rng(seed))
        k = report["applied"][0]["k"]
        ks.add(k)
        assert out.size == (SIZE[::-1] if k % 2 else SIZE)
    assert ks == {1, 2, 3}


def test_rotated_box_is_bounds_of_rotated_corners():
    image, record = scene("bbox_2d")
    out, rec, report = augment(
        image, record, parse_augment_ops([op("rotate", max_degrees=30)]), np.random.default_rng(3)
    )
    angle = report["applied"][0]["angle"]
    corners, size = g.rotate_points(g.xyxy_to_quad8([BOX]), *SIZE, angle)
    assert size == out.size
    np.testing.assert_allclose(rec.objects[0].points, g.quad8_to_xyxy(corners)[0])
    # The uncovered corners of the canvas are the fill colour.
    assert out.getpixel((0, 0)) == (114, 114, 114)


def test_quad_order_canonical_after_hflip():
    image, record = scene("quad")
    out, rec, _ = augment(image, record, parse_augment_ops([op("hflip")]), np.random.default_rng(0))
    points = np.array(rec.objects[0].points)
    np.testing.assert_array_equal(points, g.canonical_quad8([points])[0])
    flipped = g.hflip_points(QUAD, SIZE[0]).reshape(4, 2)
    assert sorted(map(tuple, points.reshape(4, 2))) == sorted(map(tuple, flipped))
    assert g.quad_is_valid(points) is None


def test_color_jitter_changes_pixels_only():
    image, record = scene("quad")
    ops = parse_augment_ops([op("color_jitter", brightness=0.5, contrast=0.5, saturation=0.5)])
    out, rec, report = augment(image, record, ops, np.random.default_rng(1))
    assert rec == record
    assert out.size == image.size and out.tobytes() != image.tobytes()
    assert set(report["applied"][0]) == {"op", "brightness", "contrast", "saturation"}


# ---------------------------------------------------------------------------- visibility


def test_object_cropped_away_is_dropped_and_counted():
    size = (200, 200)
    image = Image.new("RGB", size, GREY)
    # The 0.5 window always contains the centre; the corner box needs x0, y0 < ~1.2 px to stay.
    record = make_record([("bbox_2d", (0.0, 0.0, 4.0, 4.0)), ("quad", (98, 96, 104, 100, 102, 104, 96, 100))], size)
    ops = parse_augment_ops([op("scale_crop", min_scale=0.5, max_scale=0.5)])
    out, rec, report = augment(image, record, ops, np.random.default_rng(0))
    assert report["dropped"] == 1 and report["dropped_by_reason"] == {"low_visibility": 1}
    assert [o.desc for o in rec.objects] == ["obj 1"]
    assert out.size == size


def test_ignore_regions_move_with_the_image_and_a_draw_leaving_only_them_is_undone():
    size = (200, 200)
    image = Image.new("RGB", size, GREY)
    record = make_record([("bbox_2d", (0.0, 0.0, 4.0, 4.0)), ("quad", (98, 96, 104, 100, 102, 104, 96, 100))], size)
    crowd = dataclasses.replace(record, objects=(record.objects[0], dataclasses.replace(record.objects[1],
                                                                                        ignore=True)))
    flipped = augment(image, crowd, parse_augment_ops([op("hflip")]), np.random.default_rng(0))[1]
    assert [o.ignore for o in flipped.objects] == [False, True]
    assert flipped.objects[1].points == tuple(float(v) for v in g.canonical_quad8(
        g.hflip_points(np.array([record.objects[1].points]), 200))[0])
    # the same crop as above drops the corner box: only the ignore region would be left
    ops = parse_augment_ops([op("scale_crop", min_scale=0.5, max_scale=0.5)])
    out, rec, report = augment(image, crowd, ops, np.random.default_rng(0))
    assert rec is crowd and report["reverted"] == "only ignore regions were left" and out.size == size
    assert out is not image


def test_partly_visible_object_clipped_or_dropped_by_threshold():
    size = (100, 100)
    image = Image.new("RGB", size, GREY)
    record = make_record([("bbox_2d", (0.0, 40.0, 20.0, 60.0))], size)
    kept = dropped = 0
    for seed in range(30):
        ops = parse_augment_ops([op("scale_crop", min_scale=0.8, max_scale=0.8, min_visibility=0.6)])
        _, rec, report = augment(image, record, ops, np.random.default_rng(seed))
        x0 = report["applied"][0]["window"][0]
        visible = max(0.0, 20.0 - x0) / 20.0
        if rec.objects:
            kept += 1
            assert visible >= 0.6 - 1e-3
            assert rec.objects[0].points[0] == 0.0  # clipped at the left edge
        else:
            dropped += 1
            assert visible < 0.6 + 1e-3 and report["dropped"] == 1
    assert kept and dropped


# ---------------------------------------------------------------------------- determinism and purity

ALL_OPS = [
    op("hflip", p=0.5),
    op("vflip", p=0.5),
    op("rot90", p=0.5),
    op("rotate", max_degrees=10),
    op("scale_crop", min_scale=0.6),
    op("color_jitter", brightness=0.3, contrast=0.3, saturation=0.3),
]


def test_same_seed_same_output_and_inputs_untouched():
    image, record = scene("quad")
    before = image.tobytes()
    ops = parse_augment_ops(ALL_OPS)
    out_a, rec_a, rep_a = augment(image, record, ops, np.random.default_rng(5))
    out_b, rec_b, rep_b = augment(image, record, ops, np.random.default_rng(5))
    assert out_a.tobytes() == out_b.tobytes() and out_a.size == out_b.size
    assert rec_a == rec_b and rep_a == rep_b
    out_c, rec_c, _ = augment(image, record, ops, np.random.default_rng(6))
    assert out_c.tobytes() != out_a.tobytes() and rec_c != rec_a
    assert image.tobytes() == before and record == scene("quad")[1]
    assert rec_a.image == record.image and rec_a.source == record.source and rec_a.summary == record.summary


def test_no_ops_returns_a_copy():
    image, record = scene("bbox_2d")
    out, rec, report = augment(image, record, [], np.random.default_rng(0))
    assert out is not image and out.tobytes() == image.tobytes()
    assert rec == record and report == {"applied": [], "dropped": 0, "dropped_by_reason": {}}


def test_size_mismatch_is_refused():
    image, record = scene("bbox_2d")
    with pytest.raises(ValueError, match="record says 64x48 but the image is 48x64"):
        augment(image.transpose(Image.Transpose.ROTATE_90), record, [], np.random.default_rng(0))


# ---------------------------------------------------------------------------- property


@st.composite
def records(draw):
    w, h = draw(st.integers(8, 48)), draw(st.integers(8, 48))
    objects = []
    for _ in range(draw(st.integers(0, 4))):
        bw, bh = draw(st.integers(2, w)), draw(st.integers(2, h))
        x1, y1 = draw(st.integers(0, w - bw)), draw(st.integers(0, h - bh))
        if draw(st.booleans()):
            objects.append(("bbox_2d", (x1, y1, x1 + bw, y1 + bh)))
        else:  # the diamond through the box's edge midpoints
            cx, cy = x1 + bw / 2, y1 + bh / 2
            objects.append(("quad", (cx, y1, x1 + bw, cy, cx, y1 + bh, x1, cy)))
    return make_record([(k, tuple(map(float, p))) for k, p in objects], (w, h))


PROPERTY_OPS = [
    op("hflip", p=0.5),
    op("vflip", p=0.5),
    op("rot90", p=0.5),
    op("rotate", max_degrees=45, min_visibility=0.0),
    op("scale_crop", min_scale=0.3, min_visibility=0.0),
    op("scale_crop", min_scale=0.5, max_scale=0.9, min_visibility=0.9),
    op("color_jitter", brightness=0.2),
]


@settings(max_examples=200, deadline=None)
@given(records(), st.lists(st.sampled_from(PROPERTY_OPS), max_size=4), st.integers(0, 2**32 - 1))
def test_outputs_stay_inside_and_valid(record, spec, seed):
    image = Image.new("RGB", (record.width, record.height), GREY)
    out, rec, report = augment(image, record, parse_augment_ops(spec), np.random.default_rng(seed))
    assert (rec.width, rec.height) == out.size
    assert len(rec.objects) + report["dropped"] == len(record.objects)
    for obj in rec.objects:
        pts = np.array(obj.points)
        assert np.all(pts[0::2] >= 0) and np.all(pts[0::2] <= rec.width), obj
        assert np.all(pts[1::2] >= 0) and np.all(pts[1::2] <= rec.height), obj
    # The output is a valid record under the contract (boxes have area, quads are proper).
    parsed, problems = parse_record(record_to_json(rec, None), SOURCE, Path("/"), check_image=False)
    assert problems == [], [str(p) for p in problems]
    assert dataclasses.replace(parsed, source=rec.source) == rec
