"""The answer codec: how a builder's answers hold objects, written and read back, in one place.

A builder that answers with geometry owns one (`BaseBuilder.codec`): the answer's coordinate space
(`emit_norm`) and object order. It gives the objects an answer about some images holds, in the answer's space
(`answer_objects`: what the training target writes, what the GRPO rewards take as the truth, what the health
check expects to decode from the labels), the ignore regions in that space (`ignore_objects`, never written),
the answer text (`write`), and reads answers back (`read_answer`, in the answer's space) to pixels of an image
(`to_pixels`: the inference engine). Objects are `src.datasets.objects.GeoObject` throughout: no step writes
JSON to read it again.

The values an answer holds are the grid integers `src.datasets.geometry.pixel_to_norm` gives (ms-swift's
rounding), converted by each kind of the registry (`GeometryKind.to_grid` / `from_grid`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from src.datasets import kinds
from src.datasets.answer import ParsedAnswer, answer_entry, dump_answer, order_objects, parse_answer
from src.datasets.geometry import pixel_to_norm
from src.datasets.kinds import GeometryKind
from src.datasets.objects import GeoObject

__all__ = ["AnswerCodec", "ObjectsOnImage", "parsed_objects", "read_answer"]


class ObjectsOnImage(Protocol):
    """What the codec needs of an image: its displayed size and its objects in pixels (a `Record`, or a row's
    decoded geometry, `src.datasets.builders.base.ImageGeometry`)."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def objects(self) -> Sequence[GeoObject]: ...


def parsed_objects(parsed: ParsedAnswer) -> tuple[GeoObject, ...]:
    """The objects of a parsed answer as object records, in the answer's space: kind, values, label as `desc`,
    the image index when the entry gave one; score 1.0."""
    return tuple(GeoObject(o["kind"], tuple(o["coords"]), o["label"], image=o.get("image")) for o in parsed.objects)


def read_answer(text: str) -> tuple[ParsedAnswer, tuple[GeoObject, ...]]:
    """An answer text read (`src.datasets.answer.parse_answer`: what was read and how well) and its complete
    objects in the answer's space."""
    parsed = parse_answer(text)
    return parsed, parsed_objects(parsed)


def _convert(objects: Sequence[GeoObject], width: float, height: float, norm: str, to_grid: bool,
             ndigits: int | None = None) -> list[tuple]:
    """Each object's values in the other space: one conversion per kind present over the concatenation of its
    objects' values (every value list is interleaved x, y, so x stays at even and y at odd positions); one for
    all of them when no kind present converts in its own way (`GeometryKind.to_grid` / `from_grid` as the base
    class defines them), the usual case, as this runs for every training sample."""
    if not objects:
        return []
    keys = {o.kind for o in objects}
    groups = ([list(range(len(objects)))] if all(_default_conversion(k) for k in keys)
              else [[i for i, o in enumerate(objects) if o.kind == k] for k in keys])
    out: list[tuple] = [()] * len(objects)
    for idx in groups:
        kind = kinds.get(objects[idx[0]].kind)
        flat = np.fromiter((v for i in idx for v in objects[i].points), dtype=np.float64)[None]
        converted = (kind.to_grid if to_grid else kind.from_grid)(flat, width, height, norm)[0]
        values = converted.tolist() if ndigits is None else [round(float(v), ndigits) for v in converted]
        start = 0
        for i in idx:
            end = start + len(objects[i].points)
            out[i] = tuple(values[start:end])
            start = end
    return out


def _default_conversion(key: str) -> bool:
    cls = type(kinds.get(key))
    return cls.to_grid is GeometryKind.to_grid and cls.from_grid is GeometryKind.from_grid


@dataclass(frozen=True, slots=True)
class AnswerCodec:
    """Objects <-> answers for one coordinate space and object order (see the module docstring)."""

    emit_norm: str
    """The answer's space: ``norm1000`` (the 0..1000 grid), ``norm100`` or ``none`` (pixels, rounded)."""
    order: str = "given"
    """The order entries are written in: ``reading`` (top, then left, then label) or ``given``."""

    def _on_images(self, images: Sequence[ObjectsOnImage], ignore: bool) -> list[tuple[GeoObject, tuple, int | None]]:
        """(pixel object, its values in the answer's space, its image index or None) in answer order."""
        grouped = len(images) > 1
        out: list[tuple[GeoObject, tuple, int | None]] = []
        for index, image in enumerate(images, start=1):
            chosen = [o for o in image.objects if o.ignore == ignore]
            if not ignore:
                chosen = order_objects(chosen, self.order)
            values = _convert(chosen, image.width, image.height, self.emit_norm, to_grid=True)
            out += [(o, v, index if grouped else None) for o, v in zip(chosen, values, strict=True)]
        return out

    def answer_objects(self, images: Sequence[ObjectsOnImage]) -> list[GeoObject]:
        """The objects an answer about `images` (one user turn) holds, in answer order, values on the answer's
        grid (ints), `image` = the image's 1-based index when there are several; ignore regions left out (the
        answer neither names nor denies them)."""
        return [GeoObject(o.kind, v, o.desc, image=i) for o, v, i in self._on_images(images, ignore=False)]

    def ignore_objects(self, images: Sequence[ObjectsOnImage]) -> list[GeoObject]:
        """The ignore regions of `images` in the answer's space (``ignore=True``, in the images' order), which
        the rewards set predictions on aside."""
        return [GeoObject(o.kind, v, o.desc, ignore=True, image=i) for o, v, i in self._on_images(images, ignore=True)]

    def space_size(self, images: Sequence[ObjectsOnImage]) -> tuple[float, float] | None:
        """``(width, height)`` of the answer's space for `images`: where each image's far corner lands (the grid,
        1000 x 1000 for ``norm1000``; the image's own size for pixel answers); None when the images differ."""
        corners = {tuple(pixel_to_norm([[im.width, im.height]], im.width, im.height, self.emit_norm)[0].tolist())
                   for im in images}
        if len(corners) != 1:
            return None
        width, height = corners.pop()
        return float(width), float(height)

    def write(self, images: Sequence[ObjectsOnImage]) -> str:
        """The answer text about `images`: `answer_objects` as Qwen3-VL's one-line JSON list (written from the
        converted values directly: this runs for every training sample)."""
        return dump_answer([answer_entry(o.kind, v, o.desc, i) for o, v, i in self._on_images(images, ignore=False)])

    @staticmethod
    def dump(objects: Iterable[GeoObject]) -> str:
        """Answer-space objects as the answer text (`answer_entry` each, `src.datasets.answer.dump_answer`)."""
        return dump_answer([answer_entry(o.kind, o.points, o.desc, o.image) for o in objects])

    def to_pixels(self, objects: Sequence[GeoObject], width: int, height: int) -> list[GeoObject]:
        """Answer-space objects about one image back in its pixels (rounded to 0.01 px), everything else kept."""
        values = _convert(objects, width, height, self.emit_norm, to_grid=False, ndigits=2)
        return [replace(o, points=v) for o, v in zip(objects, values, strict=True)]
