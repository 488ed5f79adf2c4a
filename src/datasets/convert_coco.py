"""COCO detection JSON -> the grounding JSONL contract (:mod:`src.datasets.contract`).

* one record per COCO image, in the file's order, objects in annotation order; images without
  annotations get ``objects: []``;
* the category ``name`` becomes ``desc``;
* ``bbox`` ``[x, y, w, h]`` becomes ``bbox_2d`` ``[x, y, x + w, y + h]``;
* a ``segmentation`` that is a single polygon of exactly 4 points becomes a ``quad`` in
  canonical vertex order; crowd (``iscrowd``) and RLE annotations, and other polygons, keep
  their bbox; a 4-point polygon that is not a proper quad (a bow-tie, or more than 1 px outside
  the image) keeps its bbox too, and is counted;
* coordinates up to 1 px outside the image are clamped onto it and counted (the contract's
  tolerance); an annotation further out is skipped;
* image paths are written relative to the output file's directory; ``width``/``height`` come
  from the COCO image entry and must match the image file (after EXIF orientation), else the
  image is skipped.

Every skipped image or annotation is reported as ``ann_file: image id N (file_name): reason``
or ``ann_file: annotation id M (image id N): reason``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .contract import CLAMP_TOLERANCE_PX
from .geometry import canonical_quad8, is_finite_number, quad_is_valid
from .images import ImageError, image_size

__all__ = ["CocoConversion", "coco_to_records", "convert_coco_file"]

SizeFn = Callable[[Path], tuple[int, int]]
"""``(width, height)`` of an image file as displayed; raises :class:`ImageError` if unreadable."""

_IMAGE_SKIPPED = "image skipped"


@dataclass(frozen=True, slots=True)
class _Skip:
    what: str  # "image" or "annotation"
    reason: str  # short, fixed text: the key of the summary's counts
    message: str  # the full line shown to the user


@dataclass(slots=True)
class _Converted:
    records: list[dict] = field(default_factory=list)
    skips: list[_Skip] = field(default_factory=list)
    # Counts that are not skips: "quad", "bbox_2d", "crowd/RLE kept as bbox", clamped coords, ...
    notes: Counter = field(default_factory=Counter)


def _as_size(value: object) -> int | None:
    # COCO writers sometimes store sizes as 640.0; an integral float is still a size.
    if is_finite_number(value) and float(value).is_integer() and value > 0:
        return int(value)
    return None


def _key(value: object) -> int | str | None:
    # COCO ids are ints (sometimes strings); anything else cannot match and must not crash a lookup.
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _clamp(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int] | None:
    """Clamp ``points`` (2k,) into the image; ``None`` if any is more than the tolerance out."""
    limit = np.tile([width, height], len(points) // 2).astype(np.float64)
    clamped = np.clip(points, 0.0, limit)
    moved = np.abs(clamped - points)
    if np.any(moved > CLAMP_TOLERANCE_PX):
        return None
    return clamped, int(np.count_nonzero(moved))


def _quad_from(segmentation: object) -> np.ndarray | None:
    """The 8 values of a segmentation that is exactly one 4-point polygon, else ``None``."""
    if not isinstance(segmentation, list) or len(segmentation) != 1:
        return None
    polygon = segmentation[0]
    if not isinstance(polygon, list) or len(polygon) != 8 or not all(is_finite_number(v) for v in polygon):
        return None
    return np.array(polygon, dtype=np.float64)


class _Converter:
    def __init__(self, coco: dict, images_dir: Path, out_dir: Path, size_fn: SizeFn, ann_file: str) -> None:
        self.coco = coco
        self.images_dir = Path(os.path.abspath(images_dir))
        self.out_dir = Path(os.path.abspath(out_dir))
        self.size_fn = size_fn
        self.ann_file = ann_file
        self.result = _Converted()

    def skip(self, what: str, where: str, reason: str, detail: str = "") -> None:
        message = f"{self.ann_file}: {where}: {reason}{detail}"
        self.result.skips.append(_Skip(what=what, reason=reason, message=message))

    # ------------------------------------------------------------------ categories

    def categories(self) -> dict[Any, str]:
        names: dict[Any, str] = {}
        for cat in self.coco.get("categories") or []:
            if isinstance(cat, dict) and isinstance(cat.get("name"), str) and cat["name"].strip():
                if _key(cat.get("id")) is not None:
                    names[_key(cat.get("id"))] = cat["name"]
        return names

    # ------------------------------------------------------------------ images

    def image_entry(self, image: object, seen: set) -> tuple[Any, dict] | None:
        if not isinstance(image, dict):
            self.skip("image", f"image entry {image!r}"[:80], "image entry must be an object")
            return None
        image_id, file_name = image.get("id"), image.get("file_name")
        where = f"image id {image_id} ({file_name})"
        if _key(image_id) is None:
            self.skip("image", where, "id must be an integer or a string")
            return None
        if image_id in seen:
            self.skip("image", where, "duplicate image id")
            return None
        seen.add(image_id)
        if not isinstance(file_name, str) or not file_name.strip():
            self.skip("image", where, "file_name must be a non-empty string")
            return None
        width, height = _as_size(image.get("width")), _as_size(image.get("height"))
        if width is None or height is None:
            detail = f" (got {image.get('width')!r} x {image.get('height')!r})"
            self.skip("image", where, "width/height must be positive integers", detail)
            return None
        path = Path(os.path.normpath(self.images_dir / file_name))
        try:
            actual = self.size_fn(path)
        except ImageError as exc:
            self.skip("image", where, exc.reason, f" ({path})")
            return None
        if tuple(actual) != (width, height):
            detail = f": COCO says {width}x{height}, the file is {actual[0]}x{actual[1]} (after EXIF orientation)"
            self.skip("image", where, "size mismatch", detail)
            return None
        relative = Path(os.path.relpath(path, self.out_dir)).as_posix()
        return image_id, {"images": [relative], "objects": [], "width": width, "height": height}

    # ------------------------------------------------------------------ annotations

    def annotation(self, ann: dict, record: dict, desc: str, where: str) -> dict | None:
        width, height = record["width"], record["height"]
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_finite_number(v) for v in bbox):
            self.skip("annotation", where, "bbox must be [x, y, w, h] with 4 finite numbers", f" (got {bbox!r})")
            return None
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            self.skip("annotation", where, "zero-area bbox", f" (w={w:g}, h={h:g})")
            return None
        crowd_or_rle = bool(ann.get("iscrowd")) or isinstance(ann.get("segmentation"), dict)
        quad = None if crowd_or_rle else _quad_from(ann.get("segmentation"))
        if quad is not None:
            obj = self.quad_object(quad, width, height, desc)
            if obj is not None:
                return obj
        obj = self.box_object(bbox, width, height, desc, where)
        if obj is not None and quad is not None:
            self.result.notes["4-point segmentation not a valid quad, kept bbox"] += 1
        elif obj is not None and crowd_or_rle:
            self.result.notes["crowd/RLE kept as bbox"] += 1
        return obj

    def box_object(self, bbox: list, width: int, height: int, desc: str, where: str) -> dict | None:
        x, y, w, h = (float(v) for v in bbox)
        clamped = _clamp(np.array([x, y, x + w, y + h]), width, height)
        if clamped is None:
            detail = f" (bbox {bbox}, image {width}x{height})"
            self.skip("annotation", where, f"bbox outside the image by more than {CLAMP_TOLERANCE_PX:g} px", detail)
            return None
        points, moved = clamped
        if points[2] <= points[0] or points[3] <= points[1]:
            self.skip("annotation", where, "zero-area bbox after clamping to the image", f" (bbox {bbox})")
            return None
        self.result.notes["coordinates clamped (within 1 px)"] += moved
        return {"bbox_2d": [_json_number(v) for v in points], "desc": desc}

    def quad_object(self, quad: np.ndarray, width: int, height: int, desc: str) -> dict | None:
        clamped = _clamp(quad, width, height)
        if clamped is None or quad_is_valid(clamped[0]) is not None:
            return None
        points, moved = clamped
        self.result.notes["coordinates clamped (within 1 px)"] += moved
        ordered = canonical_quad8(points[None])[0] + 0.0  # +0.0: no -0.0 in the output
        return {"quad": [_json_number(v) for v in ordered], "desc": desc}

    # ------------------------------------------------------------------ all

    def run(self) -> _Converted:
        categories = self.categories()
        records: dict[Any, dict] = {}
        skipped_images: set = set()
        seen: set = set()
        for image in self.coco.get("images") or []:
            entry = self.image_entry(image, seen)
            if entry is not None:
                records[entry[0]] = entry[1]
            elif isinstance(image, dict) and _key(image.get("id")) not in records:
                # A duplicate id's annotations belong to the first entry, which was kept.
                skipped_images.add(_key(image.get("id")))
        for ann in self.coco.get("annotations") or []:
            if not isinstance(ann, dict):
                self.skip("annotation", f"annotation {ann!r}"[:80], "annotation must be an object")
                continue
            image_id = _key(ann.get("image_id"))
            where = f"annotation id {ann.get('id')} (image id {image_id})"
            if image_id in skipped_images:
                # One line per skipped image is enough; its annotations are only counted.
                self.result.skips.append(_Skip(what="annotation", reason=_IMAGE_SKIPPED, message=""))
                continue
            if image_id not in records:
                self.skip("annotation", where, "unknown image_id")
                continue
            desc = categories.get(_key(ann.get("category_id")))
            if desc is None:
                self.skip(
                    "annotation",
                    where,
                    "unknown category_id (or category without a name)",
                    f" ({ann.get('category_id')!r})",
                )
                continue
            obj = self.annotation(ann, records[image_id], desc, where)
            if obj is not None:
                records[image_id]["objects"].append(obj)
        self.result.records = list(records.values())
        kinds = Counter("quad" if "quad" in obj else "bbox_2d" for r in self.result.records for obj in r["objects"])
        self.result.notes.update(kinds)
        return self.result


def _check_coco(coco: object) -> None:
    if not isinstance(coco, dict):
        raise ValueError(f"a COCO file must hold a JSON object, got {type(coco).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise ValueError(f"not a COCO detection file: missing {key!r} (keys: {', '.join(map(str, coco))})")
        if not isinstance(coco[key], list):
            raise ValueError(f"COCO {key!r} must be a list, got {type(coco[key]).__name__}")


def coco_to_records(
    coco: dict,
    images_dir: Path,
    out_dir: Path,
    *,
    size_fn: SizeFn = image_size,
    ann_file: str = "coco",
) -> tuple[list[dict], list[str]]:
    """Convert a loaded COCO detection dict to contract JSONL objects.

    Returns ``(records, problems)``: one dict per usable COCO image (as written to the JSONL:
    image path relative to ``out_dir``) and one line per skipped image or annotation, prefixed
    with ``ann_file``. Image files (``images_dir / file_name``) are only touched through
    ``size_fn``, which must return the displayed ``(width, height)`` or raise
    :class:`~src.datasets.images.ImageError`. Raises ``ValueError`` if ``coco`` lacks the
    ``images`` / ``annotations`` / ``categories`` lists.
    """
    _check_coco(coco)
    result = _Converter(coco, images_dir, out_dir, size_fn, ann_file).run()
    return result.records, [skip.message for skip in result.skips if skip.message]


# ---------------------------------------------------------------------------- file wrapper


@dataclass(frozen=True, slots=True)
class CocoConversion:
    """What :func:`convert_coco_file` wrote and skipped."""

    out: str
    """Absolute path of the JSONL written."""
    images_written: int
    images_skipped: int
    objects_by_kind: dict[str, int]
    """``{"bbox_2d": n, "quad": m}``."""
    annotations_skipped: dict[str, int]
    """Skipped annotations by reason (``"image skipped"``: their image was skipped)."""
    notes: dict[str, int]
    """Counts that are not skips, e.g. crowd/RLE annotations kept as bbox, clamped coordinates."""
    problems: list[str]
    """One line per skipped image or annotation."""

    @property
    def skipped_anything(self) -> bool:
        return bool(self.images_skipped or self.annotations_skipped)

    def summary(self) -> str:
        """A few lines for the terminal."""
        kinds = ", ".join(f"{self.objects_by_kind.get(k, 0)} {k}" for k in ("bbox_2d", "quad"))
        lines = [
            f"wrote {self.images_written} records to {self.out}; images skipped: {self.images_skipped}",
            f"objects: {kinds}",
        ]
        skipped = sum(self.annotations_skipped.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.annotations_skipped.items()))
        lines.append(f"annotations skipped: {skipped}" + (f" ({reasons})" if reasons else ""))
        if self.notes:
            lines.append("notes: " + ", ".join(f"{key}: {count}" for key, count in sorted(self.notes.items())))
        return "\n".join(lines)


def convert_coco_file(
    ann_file: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    size_fn: SizeFn = image_size,
) -> CocoConversion:
    """Read a COCO JSON file, convert it with :func:`coco_to_records` and write ``out`` (JSONL).

    Refuses an existing ``out`` with ``FileExistsError`` unless ``overwrite``; creates its
    directory. Raises ``FileNotFoundError`` for a missing ``ann_file`` and ``ValueError`` for
    one that is not COCO detection JSON. Usable records are written even when some images or
    annotations are skipped; check :attr:`CocoConversion.skipped_anything`.
    """
    target = Path(os.path.abspath(out))
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    with open(ann_file, encoding="utf-8") as fh:
        try:
            coco = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{ann_file}: not valid JSON: {exc}") from exc
    try:
        _check_coco(coco)
    except ValueError as exc:
        raise ValueError(f"{ann_file}: {exc}") from exc
    result = _Converter(coco, Path(images_dir), target.parent, size_fn, str(ann_file)).run()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: an interrupted run never leaves half a file.
    partial = target.with_name(target.name + ".partial")
    with open(partial, "w", encoding="utf-8", newline="\n") as fh:
        for record in result.records:
            fh.write(json.dumps(record, ensure_ascii=False))
            fh.write("\n")
    os.replace(partial, target)
    n_images = len(coco["images"])
    notes = dict(result.notes)
    objects = {kind: notes.pop(kind, 0) for kind in ("bbox_2d", "quad")}
    return CocoConversion(
        out=str(target),
        images_written=len(result.records),
        images_skipped=n_images - len(result.records),
        objects_by_kind=objects,
        annotations_skipped=dict(Counter(s.reason for s in result.skips if s.what == "annotation")),
        notes={key: count for key, count in notes.items() if count},
        problems=[skip.message for skip in result.skips if skip.message],
    )
