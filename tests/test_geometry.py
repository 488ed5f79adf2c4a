"""Geometry: tables for the conversions, properties for round trips, and every transform
checked against PIL doing the same thing to a rasterised mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from src.datasets import geometry as g

FAST = settings(max_examples=100, deadline=None)
SIZES = st.tuples(st.integers(8, 60), st.integers(8, 60))


# ---------------------------------------------------------------------------- helpers


@st.composite
def image_and_box(draw, min_side=1):
    """An image size and an integer box inside it, each side at least ``min_side`` px."""
    w, h = draw(SIZES)
    bw, bh = draw(st.integers(min_side, w)), draw(st.integers(min_side, h))
    x1, y1 = draw(st.integers(0, w - bw)), draw(st.integers(0, h - bh))
    return (w, h), np.array([[x1, y1, x1 + bw, y1 + bh]], dtype=float)


@st.composite
def convex_quad(draw, scale=20.0, centre=(30.0, 30.0)):
    """A convex quad without needle-sharp corners: four points on an ellipse."""
    start = draw(st.floats(0, 2 * math.pi))
    gaps = draw(st.lists(st.floats(1.2, 1.9), min_size=3, max_size=3))
    angles = start + np.cumsum([0.0, *gaps])
    rx, ry = draw(st.floats(0.7, 1.0)) * scale, draw(st.floats(0.7, 1.0)) * scale
    xs, ys = centre[0] + rx * np.cos(angles), centre[1] + ry * np.sin(angles)
    return np.stack([xs, ys], axis=1).reshape(8)


def box_mask(size_wh, box) -> Image.Image:
    """A mask whose set pixels are exactly the continuous box (x2, y2 exclusive)."""
    mask = Image.new("L", size_wh, 0)
    x1, y1, x2, y2 = (int(v) for v in box)
    ImageDraw.Draw(mask).rectangle((x1, y1, x2 - 1, y2 - 1), fill=255)
    assert mask.getbbox() == (x1, y1, x2, y2)
    return mask


def quad_mask(size_wh, quad) -> Image.Image:
    """A mask of the pixels whose centres lie inside a convex quad.

    ImageDraw.polygon also paints the rounded outline, which is up to ~1.5 px off; testing
    pixel centres is the same rule PIL's NEAREST resampling uses, and stays within 1 px.
    """
    w, h = size_wh
    pts = g.canonical_quad8(np.asarray(quad, dtype=float)[None])[0].reshape(4, 2)
    cy, cx = np.mgrid[0:h, 0:w] + 0.5
    inside = np.ones((h, w), dtype=bool)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        inside &= (x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0) >= 0  # clockwise: right side
    return Image.fromarray(inside.astype(np.uint8) * 255)


def bbox_of(points) -> np.ndarray:
    return g.quad8_to_xyxy(np.asarray(points, dtype=float).reshape(1, 8))[0]


def assert_bbox_close(mask: Image.Image, expected, tol: float) -> None:
    got = mask.getbbox()
    assert got is not None, "the transformed mask is empty"
    np.testing.assert_allclose(got, expected, atol=tol)


# ---------------------------------------------------------------------------- norm grids


@pytest.mark.parametrize(
    ("points", "size", "norm", "expected"),
    [
        ([[10.0, 20.0, 30.0, 40.0]], (200, 100), "norm1000", [[50, 200, 150, 400]]),
        ([[0.0, 0.0, 200.0, 100.0]], (200, 100), "norm1000", [[0, 0, 1000, 1000]]),
        ([[-5.0, -1.0, 250.0, 300.0]], (200, 100), "norm1000", [[0, 0, 1000, 1000]]),
        # ties go to the even neighbour, as Python's round: 0.5 px of 200 is 2.5 -> 2, 1.5 px is 7.5 -> 8
        ([[0.5, 0.25, 1.5, 0.75]], (200, 100), "norm1000", [[2, 2, 8, 8]]),
        # x / width * 1000, not x * (1000 / width): 101.5 / 200 * 1000 is 507.49999999999994 -> 507 (the
        # other order gives 507.5 -> 508); 30 / 480 * 1000 is exactly 62.5 -> 62 (the other: 62.50000000000001)
        ([[101.5, 30.0]], (200, 480), "norm1000", [[507, 62]]),
        ([[10.0, 20.0]], (200, 100), "norm100", [[5, 20]]),
        ([[2.5, 3.49, 999.0, -2.0, 3.5, 4.5]], (200, 100), "none", [[2, 3, 200, 0, 4, 4]]),
        (np.zeros((0, 4)), (10, 10), "norm1000", np.zeros((0, 4))),
    ],
)
def test_pixel_to_norm_table(points, size, norm, expected):
    out = g.pixel_to_norm(points, *size, norm)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)


def _ms_swift_rule(x: float, size: int) -> int:
    """ms-swift 4.6's Template.normalize_bbox, written out: int(round(x / width * norm_width))."""
    return int(round(x / size * 1000))


def _tie_values() -> list[tuple[float, int]]:
    """(x, width) pairs where x / width * 1000 lands on .5, or where the two evaluation orders disagree."""
    out = []
    for width in (200, 333, 480, 612, 640, 1000):
        for k in range(8 * width + 1):
            x = k / 8
            if (x / width * 1000) % 1 == 0.5 or x / width * 1000 != x * (1000 / width):
                out.append((x, width))
    return out


def test_the_norm1000_rule_is_ms_swifts_on_every_tie():
    pairs = _tie_values()
    assert len(pairs) > 1000 and any(x / w * 1000 != x * (1000 / w) for x, w in pairs)
    for width in {w for _, w in pairs}:
        xs = [x for x, w in pairs if w == width]
        got = g.pixel_to_norm(np.column_stack([xs, xs]), width, width, "norm1000")
        assert got[:, 0].tolist() == [_ms_swift_rule(x, width) for x in xs], width


@pytest.mark.slow  # imports ms-swift (torch, transformers)
def test_the_norm1000_rule_equals_ms_swift_normalize_bbox_itself():
    from types import SimpleNamespace

    from swift.template.base import Template

    pairs = [(x, w) for x, w in _tie_values() if w in (200, 480)][:400]
    boxes = [[x, x, x, x] for x, _ in pairs]
    inputs = SimpleNamespace(objects={"bbox": [list(b) for b in boxes], "width": [w for _, w in pairs],
                                      "height": [w for _, w in pairs], "image_id": list(range(len(pairs)))},
                             images=[None] * len(pairs))
    Template.normalize_bbox(SimpleNamespace(norm_bbox="norm1000"), inputs)
    ours = [g.pixel_to_norm(np.array([b]), w, w, "norm1000")[0].tolist() for b, (_, w) in zip(boxes, pairs,
                                                                                               strict=True)]
    assert ours == inputs.objects["bbox"]


@FAST
@given(size=SIZES, data=st.data())
def test_pixel_to_norm_is_round_of_x_over_width_times_1000(size, data):
    w, h = size
    x = data.draw(st.floats(0, w))
    y = data.draw(st.floats(0, h))
    assert g.pixel_to_norm([[x, y]], w, h, "norm1000").tolist() == [[_ms_swift_rule(x, w), _ms_swift_rule(y, h)]]


@pytest.mark.parametrize("norm", ["none", "norm100", "norm1000"])
@FAST
@given(size=SIZES, data=st.data())
def test_pixel_norm_round_trip_within_half_step(norm, size, data):
    w, h = size
    xs = data.draw(st.lists(st.floats(-3, w + 3), min_size=2, max_size=2))
    ys = data.draw(st.lists(st.floats(-3, h + 3), min_size=2, max_size=2))
    pts = np.array([[xs[0], ys[0], xs[1], ys[1]]])
    back = g.norm_to_pixel(g.pixel_to_norm(pts, w, h, norm), w, h, norm)
    step = {"none": (1.0, 1.0), "norm100": (w / 100, h / 100), "norm1000": (w / 1000, h / 1000)}
    sx, sy = step[norm]
    err = np.abs(back - g.clamp_points(pts, w, h))
    assert np.all(err[:, 0::2] <= sx / 2 + 1e-9)
    assert np.all(err[:, 1::2] <= sy / 2 + 1e-9)


def test_norm_functions_do_not_mutate_their_input():
    pts = np.array([[10.0, 20.0, 30.0, 40.0]])
    before = pts.copy()
    g.pixel_to_norm(pts, 200, 100, "norm1000")
    g.norm_to_pixel(pts, 200, 100, "norm1000")
    g.clamp_points(pts, 15, 15)
    g.hflip_points(pts, 200)
    g.rotate_points(pts, 200, 100, 30)
    np.testing.assert_array_equal(pts, before)


# ---------------------------------------------------------------------------- boxes and quads


def test_xyxy_quad8_table():
    np.testing.assert_array_equal(g.xyxy_to_quad8([[1, 2, 3, 4]]), [[1, 2, 3, 2, 3, 4, 1, 4]])
    assert g.xyxy_to_quad8(np.zeros((0, 4))).shape == (0, 8)
    assert g.quad8_to_xyxy(np.zeros((0, 8))).shape == (0, 4)
    np.testing.assert_array_equal(g.quad8_to_xyxy([[5, 0, 9, 4, 5, 8, 1, 4]]), [[1, 0, 9, 8]])


@FAST
@given(image_and_box())
def test_box_quad_round_trip(case):
    _, box = case
    quad = g.xyxy_to_quad8(box)
    np.testing.assert_array_equal(g.quad8_to_xyxy(quad), box)
    np.testing.assert_array_equal(g.canonical_quad8(quad), quad)  # already canonical


@FAST
@given(convex_quad(), st.integers(0, 3), st.booleans())
def test_canonical_order_ignores_start_vertex_and_direction(quad, shift, reverse):
    pts = np.roll(quad.reshape(4, 2), shift, axis=0)
    if reverse:
        pts = pts[::-1]
    canonical = g.canonical_quad8(pts.reshape(1, 8))[0]
    np.testing.assert_array_equal(canonical, g.canonical_quad8(quad[None])[0])
    xs, ys = canonical[0::2], canonical[1::2]
    assert 0.5 * np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys) > 0  # clockwise on screen
    assert np.argmin(xs + ys) == 0


def test_canonical_order_table():
    # counter-clockwise input starting bottom-right -> clockwise from top-left
    ccw = [[9, 9, 9, 0, 0, 0, 0, 9]]
    np.testing.assert_array_equal(g.canonical_quad8(ccw), [[0, 0, 9, 0, 9, 9, 0, 9]])
    # a diamond: top and left vertex tie on x + y, the smaller y (top) wins
    diamond = [[0, 5, 5, 10, 10, 5, 5, 0]]
    np.testing.assert_array_equal(g.canonical_quad8(diamond), [[5, 0, 10, 5, 5, 10, 0, 5]])


@pytest.mark.parametrize(
    ("quad", "reason"),
    [
        ([0, 0, 4, 0, 4, 4, 0, 4], None),
        ([0, 0, 4, 0, 1, 1, 0, 4], None),  # concave but simple
        ([0, 0, 4, 0, 4, 0, 0, 4], "repeated vertices"),
        ([0, 0, 4, 4, 4, 0, 0, 4], "self-crossing edges (bow-tie)"),
        ([0, 0, 1, 1, 2, 2, 3, 3], "zero area"),
        ([0, 0, 4, 0, float("nan"), 4, 0, 4], "non-finite coordinates"),
    ],
)
def test_quad_is_valid_table(quad, reason):
    assert g.quad_is_valid(quad) == reason


@pytest.mark.parametrize(
    ("polygon", "area"),
    [([0, 0, 4, 0, 4, 3, 0, 3], 12.0), ([0, 3, 4, 3, 4, 0, 0, 0], 12.0), ([0, 0, 2, 0, 0, 2], 2.0)],
)
def test_polygon_area_table(polygon, area):
    assert g.polygon_area(polygon) == pytest.approx(area)


def test_polygon_area_vectorised():
    out = g.polygon_area([[0, 0, 4, 0, 4, 3, 0, 3], [0, 0, 1, 0, 1, 1, 0, 1]])
    np.testing.assert_allclose(out, [12.0, 1.0])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([[0, 0, 10, 10]], [[0, 0, 10, 10]], [[1.0]]),
        ([[0, 0, 10, 10]], [[5, 0, 15, 10]], [[50 / 150]]),
        ([[0, 0, 10, 10]], [[10, 10, 20, 20]], [[0.0]]),  # touching corners
        ([[0, 0, 10, 10]], [[2, 2, 2, 8]], [[0.0]]),  # zero-area box
        ([[5, 5, 5, 5]], [[5, 5, 5, 5]], [[0.0]]),  # empty union -> 0, not NaN
        ([[0, 0, 10, 10], [0, 0, 5, 5]], [[0, 0, 5, 5]], [[0.25], [1.0]]),
        (np.zeros((0, 4)), [[0, 0, 1, 1]], np.zeros((0, 1))),
        ([[0, 0, 1, 1]], np.zeros((0, 4)), np.zeros((1, 0))),
        (np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 0))),
    ],
)
def test_box_iou_xyxy_table(a, b, expected):
    out = g.box_iou_xyxy(a, b)
    assert out.shape == np.asarray(expected).shape
    np.testing.assert_allclose(out, expected)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: g.xyxy_to_quad8(np.zeros(3)), r"xyxy must have shape \(N, 4\), got \(3,\)"),
        (lambda: g.xyxy_to_quad8(np.zeros((2, 5))), r"xyxy must have shape \(N, 4\), got \(2, 5\)"),
        (lambda: g.quad8_to_xyxy(np.zeros((2, 4))), r"quad8 must have shape \(N, 8\), got \(2, 4\)"),
        (lambda: g.canonical_quad8(np.zeros(8)), r"quad8 must have shape \(N, 8\), got \(8,\)"),
        (lambda: g.quad_is_valid(np.zeros(6)), r"quad8 must have shape \(8,\), got \(6,\)"),
        (lambda: g.box_iou_xyxy(np.zeros((1, 4)), np.zeros(4)), r"boxes_b must have shape"),
        (lambda: g.pixel_to_norm([[1, 2, 3]], 10, 10, "norm1000"), r"points_xy must have shape"),
        (lambda: g.pixel_to_norm([[1, 2]], 10, 10, "norm999"), r"norm must be one of .*norm999"),
        (lambda: g.pixel_to_norm([[1, 2]], 0, 10, "none"), r"width, height must be positive"),
        (lambda: g.polygon_area([0, 0, 1, 1]), r"at least 3 vertices"),
        (lambda: g.resize_points([[1, 2]], (10, 10), (0, 5)), r"new_size_wh must be positive"),
        (lambda: g.rot90_points([[1, 2]], 10, 10, 1.0), r"k must be an int"),
    ],
)
def test_errors_name_the_argument_and_shape(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---------------------------------------------------------------------------- transforms vs PIL


@FAST
@given(image_and_box())
def test_flips_match_pil(case):
    size, box = case
    mask = box_mask(size, box[0])
    quad = g.xyxy_to_quad8(box)
    flipped_h = bbox_of(g.hflip_points(quad, size[0]))
    flipped_v = bbox_of(g.vflip_points(quad, size[1]))
    assert_bbox_close(mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT), flipped_h, 0)
    assert_bbox_close(mask.transpose(Image.Transpose.FLIP_TOP_BOTTOM), flipped_v, 0)


ROT90 = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("k", [1, 2, 3])
@FAST
@given(case=image_and_box())
def test_rot90_matches_pil_exactly(k, case):
    size, box = case
    rotated = box_mask(size, box[0]).transpose(ROT90[k])
    points, new_size = g.rot90_points(g.xyxy_to_quad8(box), *size, k)
    assert new_size == rotated.size
    assert_bbox_close(rotated, bbox_of(points), 0)


@pytest.mark.parametrize("angle", [17, 45, 90, 135, 180, 233.5, 270, -30, 400])
@settings(max_examples=30, deadline=None)
@given(case=image_and_box(min_side=3))  # thinner boxes can miss every pixel centre
def test_rotate_expand_matches_pil(angle, case):
    size, box = case
    rotated = box_mask(size, box[0]).rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
    points, new_size = g.rotate_points(g.xyxy_to_quad8(box), *size, angle, expand=True)
    assert new_size == rotated.size
    assert g.rotated_size_wh(*size, angle) == rotated.size
    # NEAREST sets a pixel when its centre falls in the shape: edges move by up to 1 px.
    assert_bbox_close(rotated, bbox_of(points), 1.0)


@pytest.mark.parametrize("angle", [30, 90, 200])
def test_rotate_without_expand_matches_pil(angle):
    size, box = (40, 24), [12, 6, 22, 14]
    rotated = box_mask(size, box).rotate(angle, resample=Image.Resampling.NEAREST)
    points, new_size = g.rotate_points(g.xyxy_to_quad8([box]), *size, angle, expand=False)
    assert new_size == size == rotated.size
    assert_bbox_close(rotated, bbox_of(points), 1.0)


@pytest.mark.parametrize("width", [37.0, 64.0, 101.0, 173.0])
def test_rotated_size_matches_pil_for_many_angles(width):
    for angle in np.arange(0, 360, 7.3):
        img = Image.new("L", (int(width), 29))
        assert g.rotated_size_wh(int(width), 29, angle) == img.rotate(angle, expand=True).size


@FAST
@given(case=image_and_box(), data=st.data())
def test_crop_matches_pil(case, data):
    (w, h), box = case
    x0, y0 = data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1))
    cw, ch = data.draw(st.integers(1, w - x0)), data.draw(st.integers(1, h - y0))
    cropped = box_mask((w, h), box[0]).crop((x0, y0, x0 + cw, y0 + ch))
    moved = g.clamp_points(g.crop_points(box, x0, y0), cw, ch)[0]
    if moved[2] - moved[0] <= 0 or moved[3] - moved[1] <= 0:
        assert cropped.getbbox() is None  # the box fell outside the crop
    else:
        assert_bbox_close(cropped, moved, 0)


@FAST
@given(case=image_and_box(), new_size=SIZES)
def test_resize_matches_pil(case, new_size):
    size, box = case
    resized = box_mask(size, box[0]).resize(new_size, Image.Resampling.NEAREST)
    expected = g.resize_points(box, size, new_size)[0]
    if resized.getbbox() is None:  # a thin box can vanish when shrunk
        assert np.any(np.diff(expected.reshape(2, 2), axis=0) < 2)
        return
    assert_bbox_close(resized, expected, 1.0)


def test_scale_points_table():
    np.testing.assert_array_equal(g.scale_points([[1, 2, 3, 4]], 2, 0.5), [[2, 1, 6, 2]])


# A corner of a rasterised quad can sit ~1.3 px from the nearest pixel centre inside it.
RASTER_TOL = 1.5


def assert_masks_match(actual: Image.Image, expected: Image.Image) -> None:
    assert actual.size == expected.size
    differing = np.count_nonzero(np.asarray(actual) != np.asarray(expected))
    assert differing <= 2, f"{differing} pixels differ"  # only float ties on an edge may


@pytest.mark.parametrize("k", [1, 2, 3])
@FAST
@given(quad=convex_quad())
def test_quad_transforms_match_pil(k, quad):
    size = (64, 52)
    mask = quad_mask(size, quad)
    assert_bbox_close(mask, bbox_of(quad), RASTER_TOL)

    points, new_size = g.rot90_points(quad, *size, k)
    assert_masks_match(mask.transpose(ROT90[k]), quad_mask(new_size, points))
    assert_bbox_close(mask.transpose(ROT90[k]), bbox_of(points), RASTER_TOL)

    flipped = g.canonical_quad8(g.hflip_points(quad, size[0])[None])[0]
    assert_masks_match(mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quad_mask(size, flipped))

    angle = 35 * k
    points, new_size = g.rotate_points(quad, *size, angle)
    rotated = mask.rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
    assert rotated.size == new_size
    assert_bbox_close(rotated, bbox_of(points), 2.0)
