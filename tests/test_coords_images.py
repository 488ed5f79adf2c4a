"""The displayed size of an image, as the annotations use it, agrees between the header read and the decode
(src/datasets/images.py), for every EXIF orientation and the formats that carry one."""

import pytest
from PIL import Image

from src.datasets.contract import check_image_file
from src.datasets.images import image_size, load_image


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_header_size_is_the_displayed_size(tmp_path, fmt, orientation):
    img = Image.new("RGB", (60, 20), (200, 30, 30))
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.{fmt}"
    img.save(path, exif=exif if fmt == "tif" else exif.tobytes())
    displayed = (20, 60) if orientation >= 5 else (60, 20)
    assert load_image(path).size == displayed
    assert image_size(path) == displayed
    # the check run before training (header only) accepts what the decode accepts
    assert check_image_file(str(path), *displayed, decode=False) is None
    assert check_image_file(str(path), *displayed, decode=True) is None


def test_a_record_with_the_stored_size_of_a_turned_photo_is_told_why(tmp_path):
    img = Image.new("RGB", (60, 20), (200, 30, 30))
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    img.save(path, exif=exif.tobytes())
    for decode in (False, True):
        field, message = check_image_file(str(path), 60, 20, decode=decode)
        assert field == "width/height"
        assert "record says 60x20 but the image is 20x60" in message
        assert "swapped" in message and "displayed" in message and "EXIF" in message
