"""The one image rule: which images may travel as paths, and that ms-swift then sees the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from src.datasets.images import is_plain_rgb, load_image


def _jpeg_with_orientation(path, orientation):
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())
    return path


def test_plain_rgb_images_load_identically_through_ms_swift(tmp_path):
    from swift.template.vision_utils import load_image as swift_load_image

    rng = np.random.default_rng(0)
    path = tmp_path / "plain.png"
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(path)
    assert is_plain_rgb(path)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(swift_load_image(str(path))))


@pytest.mark.parametrize(("name", "make"), [
    ("rotated.jpg", lambda p: _jpeg_with_orientation(p, 6)),
    ("rgba.png", lambda p: Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(p)),
    ("palette.png", lambda p: Image.new("P", (8, 8)).save(p)),
    ("grey.png", lambda p: Image.new("L", (8, 8)).save(p)),
])
def test_images_that_need_the_project_loader_are_not_plain(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    assert not is_plain_rgb(path)
    assert load_image(path).mode == "RGB"


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    path = _jpeg_with_orientation(tmp_path / "r.jpg", 6)
    assert load_image(path).size == (20, 40)
    assert _jpeg_with_orientation(tmp_path / "u.jpg", 1) and is_plain_rgb(tmp_path / "u.jpg")
    assert not is_plain_rgb(tmp_path / "missing.png")


def test_deep_grey_images_keep_their_contrast(tmp_path):
    """A 16-bit grey TIFF that Pillow reads as 32-bit "I" came out almost all white (convert() saturates every
    value above 255) and a float "F" image in 0..1 all black (truncated to 0); they now read as 16-bit keeps its
    top 8 bits, and floats in 0..1 are scaled to 0..255."""
    ramp = np.arange(0, 65536, 256, dtype=np.int32).reshape(16, 16)  # 0 .. 65280
    Image.fromarray(ramp).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    got = np.asarray(load_image(tmp_path / "i32.tif"))
    assert got.shape == (16, 16, 3) and np.array_equal(got[..., 0], (ramp >> 8).astype(np.uint8))
    unit = (np.arange(256, dtype=np.float32) / 255).reshape(16, 16)
    Image.fromarray(unit, mode="F").save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    got = np.asarray(load_image(tmp_path / "f.tif"))
    assert np.array_equal(got[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))
