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


@pytest.mark.parametrize(("size", "refused"), [((1, 1), False), ((200, 1), False), ((201, 1), True),
                                               ((30, 8000), True), ((6000, 30), False)])
def test_an_image_too_thin_for_the_processor_is_refused_when_checked(tmp_path, size, refused):
    """Qwen-VL's smart_resize raises past a 200:1 ratio, in the middle of a run; validation says so first."""
    from transformers import Qwen2VLImageProcessor

    path = tmp_path / "thin.png"
    Image.new("RGB", size).save(path)
    processor = Qwen2VLImageProcessor(patch_size=16, merge_size=2, min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 256)
    try:
        processor(images=[load_image(path)], return_tensors="np")
        processor_refuses = False
    except ValueError:
        processor_refuses = True
    assert processor_refuses is refused
    for decode in (False, True):
        wrong = check_image_file(str(path), *size, decode=decode)
        assert (wrong is not None) is refused
        if refused:
            assert wrong[0] == "images[0]" and f"{size[0]}x{size[1]}" in wrong[1] and "200" in wrong[1]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_transparent_colour_is_composited_on_white_and_not_handed_on_as_a_path(tmp_path, mode):
    """README: transparency is composited on white. A PNG's tRNS colour is transparency; ms-swift, given the
    path, would see the colour, so the loader's image is what goes to it."""
    from src.datasets.images import is_plain_rgb, model_input

    black = (0, 0, 0) if mode == "RGB" else 0
    img = Image.new(mode, (4, 3), black)
    img.putpixel((1, 1), (10, 20, 30) if mode == "RGB" else 90)
    path = tmp_path / f"trns_{mode}.png"
    img.save(path, transparency=black)
    loaded = load_image(path)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 1)) == ((10, 20, 30) if mode == "RGB" else (90, 90, 90))
    assert not is_plain_rgb(path)
    assert not isinstance(model_input(path), str)
