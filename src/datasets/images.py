"""The one image rule: every image is read through here.

Coordinates in our data refer to the image as displayed, i.e. after its EXIF orientation is
applied, so loading and size queries both apply it. Pixels are always RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["IMAGE_LOADER_VERSION", "ImageError", "image_size", "is_plain_rgb", "load_image", "model_input"]

IMAGE_LOADER_VERSION = 4
"""Raised whenever `load_image` gives other pixels for the same file (what a pre-encoded cache holds): 2: a PNG's
tRNS colour composited on white; 3: an image over 200:1 refused, a turned TIFF's displayed size; 4: 16-bit "I"
keeps its top 8 bits, float "F" in 0..1 scaled."""
_EXIF_ORIENTATION = 0x0112
# EXIF orientations 5-8 include a transpose: the displayed image has width and height swapped.
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_WHITE = (255, 255, 255)


class ImageError(Exception):
    """An image that is missing, unreadable or cannot be decoded."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _open(path: str | os.PathLike[str]) -> Image.Image:
    p = Path(path)
    if not p.exists():
        raise ImageError(path, "file not found")
    if not p.is_file():
        raise ImageError(path, "not a regular file")
    try:
        return Image.open(p)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(path, f"cannot open image: {exc}") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("1", "L", "RGB") and "transparency" in img.info:
        # A PNG tRNS colour is transparency too: composited like an alpha channel, not left as its colour.
        img = img.convert("RGBA")
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        # A palette may carry transparency; route it through RGBA so it is composited too.
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, not whatever colour the encoder left behind them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grey (Pillow reads some 16-bit files as 32-bit "I"): keep the top 8 of 16 bits instead of
        # letting convert() saturate at 255, which turned every pixel above 255 white.
        values = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return Image.fromarray((values >> 8).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        # Float grey: 0..1 when no value passes 1 (convert() truncated it to black), else 0..255 as written.
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` fully decoded, EXIF-oriented, as an RGB image.

    Palette and alpha images, and images with a transparent colour (PNG tRNS), are composited on white;
    grayscale and CMYK are converted (16-bit grey, "I;16" or "I", keeps its top 8 bits; float grey "F" is read
    as 0..1 when no value passes 1, else as 0..255).
    Truncated or corrupt files raise :class:`ImageError` (every pixel is decoded here).
    """
    img = _open(path)
    try:
        # load() reads every pixel and closes the file of a single-frame image; no `with` here, since
        # Image.close() would also free the pixels we return.
        img.load()
        # exif_transpose copies every pixel even when there is nothing to turn: skip it then.
        needs_turn = img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
        return _to_rgb(ImageOps.exif_transpose(img) if needs_turn else img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(path, f"cannot decode image: {exc}") from exc


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of ``path`` as displayed (after EXIF orientation), without decoding.

    Reads the header and the EXIF orientation tag only. Agrees with ``load_image(path).size``
    except for a PNG whose eXIf chunk comes after the pixel data (finding it would need a
    full decode); such files are rare and ``load_image`` is the authority.
    """
    img = _open(path)
    with img:
        width, height = img.size
        try:
            # Image.Image.getexif, not the subclass's: PngImageFile.getexif decodes every
            # pixel to look for a late eXIf chunk.
            orientation = Image.Image.getexif(img).get(_EXIF_ORIENTATION, 1)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(path, f"cannot read EXIF: {exc}") from exc
    # Pillow's TIFF reader already reports the displayed size of a turned TIFF (it turns the pixels in load()):
    # swapping again gave the stored size, and a record with the right size was refused before training.
    if orientation in _SWAPS_AXES and img.format != "TIFF":
        return height, width
    return width, height


def is_plain_rgb(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an RGB image with no EXIF turn and no transparent colour, read from the header only.

    For such a file any loader that decodes and converts to RGB (ms-swift's included) gives the
    same pixels as ``load_image``, so it may be handed on as a path. PNGs are judged by the header
    only, like ``image_size``. Unreadable files answer False (``load_image`` then reports them).
    """
    try:
        img = _open(path)
        with img:
            return (img.mode == "RGB" and "transparency" not in img.info
                    and Image.Image.getexif(img).get(_EXIF_ORIENTATION, 1) in (1, None))
    except (ImageError, OSError, ValueError, SyntaxError):
        return False


def model_input(path: str | os.PathLike[str]) -> str | Image.Image:
    """What to hand ms-swift for the image at ``path`` so that it sees the frame the annotations use:
    the path itself for a plain RGB image, else the image as ``load_image`` gives it (EXIF turn applied).

    ms-swift and qwen_vl_utils open a path with PIL and never apply the EXIF orientation, so a turned
    JPEG handed on as its path would reach the model sideways.
    """
    return str(path) if is_plain_rgb(path) else load_image(path)
