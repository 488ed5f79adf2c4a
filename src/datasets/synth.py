"""Synthetic grounding data with exact annotations, for smoke tests and tiny-model training.

Each image (96-192 px per side, usually not square) has a plain or noisy grey background and
1-4 non-overlapping objects in one of four colours:

* ``"<colour> rectangle"`` and ``"<colour> circle"`` -> ``bbox_2d``, the tight bounds of the
  drawn pixels;
* ``"<colour> tag"`` (a rotated rectangle) and ``"text: ABC"`` (rotated letters) -> ``quad``,
  the four corners of the rotated rectangle (for text: of the letters' tight box);
* with ``every_kind`` also ``"<colour> dot"`` (a small disc) -> ``point_2d``, the centre of its painted
  pixels, and ``"<colour> triangle"`` (a rotated triangle) -> ``polygon``, its three corners, so a set holds
  every geometry kind of the registry (`src/datasets/kinds/`).

Every object is drawn by painting its colour through a binary mask, and its annotation is
derived from that same mask and geometry, so pixels and labels agree by construction. Output is
deterministic: the same seed gives byte-identical files, and image ``i`` does not depend on
``n``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import kinds as geometry_kinds
from .contract import GroundingObject, Record, SourceRef, write_records
from .geometry import clamp_points, rotate_points

__all__ = ["COLOURS", "SHAPES", "write_synthetic_dataset"]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 190, 20),
}
"""Object colours. None is grey, so no background pixel (always grey) can equal one."""
SHAPES: tuple[str, ...] = ("rectangle", "circle", "tag", "text")
EVERY_KIND_SHAPES: tuple[str, ...] = (*SHAPES, "dot", "triangle")
"""The shapes with ``every_kind``: points and polygons too."""
_PLAIN_BACKGROUNDS = ((255, 255, 255), (225, 225, 225), (70, 70, 70))
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_SIDE_RANGE = (96, 192)
_MAX_OBJECTS = 4
_GAP_PX = 3  # free pixels kept between objects' bounds
_PLACEMENT_TRIES = 40
_IMAGE_NAME = re.compile(r"^\d{6}\.png$")
_BOX, _QUAD, _POINT, _POLYGON = geometry_kinds.KEYS[:4]  # the kinds each shape is annotated as


@dataclass(frozen=True, slots=True)
class _Shape:
    mask: Image.Image  # mode "L", 0 or 255, the object's own small canvas
    kind: str  # a geometry kind's key
    quad: np.ndarray | None  # the corners on the mask canvas, for quads and polygons
    desc: str


# ---------------------------------------------------------------------------- shapes


def _random_angle(rng: np.random.Generator, low: int, high: int) -> int:
    # Whole degrees, never near 0, so "rotated" shapes are visibly rotated.
    return int(rng.integers(low, high + 1)) * (1 if rng.random() < 0.5 else -1)


def _rotated(mask: Image.Image, angle: int) -> tuple[Image.Image, np.ndarray]:
    w, h = mask.size
    corners = np.array([0, 0, w, 0, w, h, 0, h], dtype=np.float64)
    quad, size = rotate_points(corners, w, h, angle, expand=True)
    # NEAREST keeps the mask binary: a pixel is set iff its centre falls inside the rotated
    # source rectangle, i.e. inside `quad`.
    rotated = mask.rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
    assert rotated.size == size, (rotated.size, size)
    return rotated, clamp_points(quad, *size)


def _rectangle(rng: np.random.Generator, colour: str) -> _Shape:
    w, h = (int(v) for v in rng.integers(14, 41, size=2))
    return _Shape(Image.new("L", (w, h), 255), _BOX, None, f"{colour} rectangle")


def _circle(rng: np.random.Generator, colour: str) -> _Shape:
    d = int(rng.integers(14, 37))
    mask = Image.new("L", (d, d), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, d - 1, d - 1), fill=255)
    return _Shape(mask, _BOX, None, f"{colour} circle")


def _tag(rng: np.random.Generator, colour: str) -> _Shape:
    w, h = int(rng.integers(20, 45)), int(rng.integers(10, 21))
    mask, quad = _rotated(Image.new("L", (w, h), 255), _random_angle(rng, 15, 75))
    return _Shape(mask, _QUAD, quad, f"{colour} tag")


def _text(rng: np.random.Generator) -> _Shape:
    letters = "".join(rng.choice(list(_LETTERS), size=3))
    font = ImageFont.load_default(size=int(rng.integers(14, 21)))
    scratch = Image.new("L", (120, 60), 0)
    draw = ImageDraw.Draw(scratch)
    draw.fontmode = "1"  # no anti-aliasing: every ink pixel has exactly the object colour
    draw.text((10, 10), letters, fill=255, font=font)
    ink = scratch.crop(scratch.getbbox())  # the letters' tight box is the shape that rotates
    mask, quad = _rotated(ink, _random_angle(rng, 8, 40))
    return _Shape(mask, _QUAD, quad, f"text: {letters}")


def _dot(rng: np.random.Generator, colour: str) -> _Shape:
    d = int(rng.integers(6, 11))
    mask = Image.new("L", (d, d), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, d - 1, d - 1), fill=255)
    return _Shape(mask, _POINT, None, f"{colour} dot")


def _triangle(rng: np.random.Generator, colour: str) -> _Shape:
    radius = int(rng.integers(10, 21))
    turn = math.radians(int(rng.integers(0, 120)))
    corners = np.array([[radius + radius * math.cos(turn + k * 2 * math.pi / 3),
                         radius + radius * math.sin(turn + k * 2 * math.pi / 3)] for k in range(3)])
    corners = np.round(corners, 2)
    mask = Image.new("L", (2 * radius + 1, 2 * radius + 1), 0)
    ImageDraw.Draw(mask).polygon([tuple(c) for c in corners], fill=255)
    return _Shape(mask, _POLYGON, corners.reshape(-1), f"{colour} triangle")


def _random_shape(rng: np.random.Generator, shapes: tuple[str, ...] = SHAPES) -> tuple[_Shape, tuple[int, int, int]]:
    colour = str(rng.choice(list(COLOURS)))
    kind = shapes[int(rng.integers(len(shapes)))]
    if kind == "rectangle":
        shape = _rectangle(rng, colour)
    elif kind == "circle":
        shape = _circle(rng, colour)
    elif kind == "tag":
        shape = _tag(rng, colour)
    elif kind == "dot":
        shape = _dot(rng, colour)
    elif kind == "triangle":
        shape = _triangle(rng, colour)
    else:
        shape = _text(rng)
    return shape, COLOURS[colour]


# ---------------------------------------------------------------------------- images


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    if rng.random() < 0.5:
        grey = _PLAIN_BACKGROUNDS[int(rng.integers(len(_PLAIN_BACKGROUNDS)))]
        return Image.new("RGB", (width, height), grey)
    base = int(rng.integers(90, 201))
    noise = rng.normal(base, 12.0, size=(height, width)).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(noise[..., None], 3, axis=2))  # grey noise: R = G = B


def _overlaps(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]]) -> bool:
    x1, y1, x2, y2 = box
    return any(
        x1 < bx2 + _GAP_PX and bx1 < x2 + _GAP_PX and y1 < by2 + _GAP_PX and by1 < y2 + _GAP_PX
        for bx1, by1, bx2, by2 in taken
    )


def _place(rng: np.random.Generator, shape: _Shape, size: tuple[int, int], taken: list) -> tuple[int, int] | None:
    (width, height), (mw, mh) = size, shape.mask.size
    if mw > width or mh > height:
        return None
    ink = shape.mask.getbbox()
    assert ink is not None
    for _ in range(_PLACEMENT_TRIES):
        ox, oy = int(rng.integers(0, width - mw + 1)), int(rng.integers(0, height - mh + 1))
        box = (ink[0] + ox, ink[1] + oy, ink[2] + ox, ink[3] + oy)
        if not _overlaps(box, taken):
            taken.append(box)
            return ox, oy
    return None


def _annotation(shape: _Shape, ox: int, oy: int, size: tuple[int, int]) -> GroundingObject:
    if shape.kind == _BOX:
        x1, y1, x2, y2 = shape.mask.getbbox()  # tight bounds of exactly what is painted
        points = (x1 + ox, y1 + oy, x2 + ox, y2 + oy)
        return GroundingObject(kind=_BOX, points=tuple(map(float, points)), desc=shape.desc)
    if shape.kind == _POINT:
        x1, y1, x2, y2 = shape.mask.getbbox()  # the centre of the painted disc
        return GroundingObject(kind=_POINT, points=((x1 + x2) / 2 + ox, (y1 + y2) / 2 + oy), desc=shape.desc)
    assert shape.quad is not None
    corners = shape.quad + np.tile([ox, oy], len(shape.quad) // 2)
    corners = geometry_kinds.get(shape.kind).canonical(clamp_points(corners, *size)[None])[0]
    # Two decimals keep the files readable; +0.0 turns -0.0 into 0.0.
    return GroundingObject(kind=shape.kind, points=tuple(float(v) for v in np.round(corners, 2) + 0.0),
                           desc=shape.desc)


def _render(rng: np.random.Generator, shapes: tuple[str, ...] = SHAPES) -> tuple[Image.Image, list[GroundingObject]]:
    width, height = (int(v) for v in rng.integers(_SIDE_RANGE[0], _SIDE_RANGE[1] + 1, size=2))
    image = _background(rng, width, height)
    taken: list[tuple[int, int, int, int]] = []
    placed: list[tuple[tuple[int, int, int, int], GroundingObject]] = []
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        shape, rgb = _random_shape(rng, shapes)
        offset = _place(rng, shape, (width, height), taken)
        if offset is None:
            continue
        image.paste(rgb, (*offset, offset[0] + shape.mask.width, offset[1] + shape.mask.height), shape.mask)
        placed.append((taken[-1], _annotation(shape, *offset, (width, height))))
    # Reading order (top to bottom, then left to right) gives every image one target sequence.
    placed.sort(key=lambda item: (item[0][1], item[0][0]))
    return image, [obj for _, obj in placed]


def _summary(objects: list[GroundingObject]) -> str:
    noun = "object" if len(objects) == 1 else "objects"
    return f"{len(objects)} {noun}: " + ", ".join(obj.desc for obj in objects)


# ---------------------------------------------------------------------------- dataset


def _prepare_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; pass --overwrite to replace the synthetic data in it")
        # Only remove what this module writes: a mistyped --out must not wipe user files.
        for name in ("train.jsonl", "val.jsonl"):
            (out_dir / name).unlink(missing_ok=True)
        images = out_dir / "images"
        if images.is_dir():
            for path in images.iterdir():
                if _IMAGE_NAME.match(path.name) and path.is_file():
                    path.unlink()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)


def _val_count(n: int, val_fraction: float) -> int:
    # Half rounds up; train always keeps at least one record.
    return min(math.floor(n * val_fraction + 0.5), n - 1)


def write_synthetic_dataset(
    out_dir: Path, n: int, seed: int = 0, val_fraction: float = 0.2, overwrite: bool = False,
    every_kind: bool = False,
) -> dict:
    """Write ``n`` synthetic images and their records under ``out_dir``.

    Layout: ``images/000001.png`` ... and ``train.jsonl`` / ``val.jsonl`` (the last
    ``round(n * val_fraction)`` images, at most ``n - 1``), image paths relative to the JSONL
    files. Refuses a non-empty ``out_dir`` with ``FileExistsError`` unless ``overwrite``, which
    replaces only files this function writes. Returns ``{"out_dir", "train", "val"`` (paths as
    str), ``"n_train", "n_val", "n_objects"``, ``"objects_by_kind"}`` (boxes and quads; with `every_kind`
    every kind of the registry, whose shapes, `EVERY_KIND_SHAPES`, include dots (points) and triangles
    (polygons); without it the files are what they always were).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    out_dir = Path(out_dir).absolute()
    _prepare_dir(out_dir, overwrite)
    train_path, val_path = out_dir / "train.jsonl", out_dir / "val.jsonl"
    n_val = _val_count(n, val_fraction)
    records: list[Record] = []
    for index in range(1, n + 1):
        image, objects = _render(np.random.default_rng([seed, index]), EVERY_KIND_SHAPES if every_kind else SHAPES)
        path = out_dir / "images" / f"{index:06d}.png"
        image.save(path, format="PNG")
        in_val = index > n - n_val
        jsonl, line = (val_path, index - (n - n_val)) if in_val else (train_path, index)
        records.append(
            Record(
                image=str(path),
                width=image.width,
                height=image.height,
                objects=tuple(objects),
                summary=_summary(objects),
                source=SourceRef(file=str(jsonl), line=line),
            )
        )
    write_records(train_path, records[: n - n_val])
    write_records(val_path, records[n - n_val :])
    kinds = [obj.kind for record in records for obj in record.objects]
    return {
        "out_dir": str(out_dir),
        "train": str(train_path),
        "val": str(val_path),
        "n_train": n - n_val,
        "n_val": n_val,
        "n_objects": len(kinds),
        "objects_by_kind": {kind: kinds.count(kind) for kind in (geometry_kinds.KEYS if every_kind else (_BOX, _QUAD))},
    }
