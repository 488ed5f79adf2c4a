"""COCO detection JSON -> the grounding JSONL contract (:mod:`src.datasets.contract`).

* one record per COCO image, in the file's order, objects in annotation order; images without
  annotations get ``objects: []`` (counted);
* the category ``name`` becomes ``desc`` (stripped; a name two categories share gets
  `` (category_id N)`` appended: `category_descs`, the rule the evaluation reads COCO files by); the
  annotation's ``category_id`` and the category's ``supercategory`` ride along on the object
  (``category_id`` only when it is an integer);
* ``bbox`` ``[x, y, w, h]`` becomes ``bbox_2d`` ``[x, y, x + w, y + h]``; ``x + w`` is added as the
  decimals the file wrote, then taken to the nearest float, so ``338.98`` comes out as ``338.98``,
  not ``338.97999999999996`` (no precision is imposed: nothing is rounded beyond that sum);
* masks are kept as their ``bbox`` unless ``polygons="quad"``: then a ``segmentation`` that is a
  single polygon of exactly 4 points becomes a ``quad`` in canonical vertex order, and any other
  mask (more points, several parts, RLE) keeps its bbox. Each kind of reduction is counted; a
  4-point polygon that is not a proper quad (a bow-tie, or more than 1 px outside the image) keeps
  its bbox too, and is counted. With ``polygons="polygon"`` a ``segmentation`` that is a single polygon of
  3 or more points becomes a ``polygon`` in canonical vertex order (the polygon kind's rules decide; one
  that is not a proper polygon, or more than 1 px outside the image, keeps its bbox, counted); several
  parts and RLE keep their bbox, counted;
* a crowd annotation (``iscrowd: 1``) becomes an ignore region (``"ignore": true``) with the same
  geometry rule; an annotation's own ``ignore`` field is disregarded, as pycocotools does;
* ids are matched by value across JSON types: an image id ``"2299"`` (a string of a decimal integer)
  and an annotation's ``2299`` are the same image (counted in the summary); other strings stay strings;
* coordinates up to 1 px outside the image are clamped onto it and counted (the contract's
  tolerance); an annotation further out is skipped;
* image paths are written relative to the output file's directory; ``width``/``height`` come
  from the COCO image entry and must match the image file (after EXIF orientation), else the
  image is skipped.

Every skipped image or annotation is reported as ``ann_file: image id N (file_name): reason``
or ``ann_file: annotation id M (image id N): reason``; an id that matches nothing is shown with its
JSON type (``'abc' (str)``).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np

from src.config.atomic import write_then_rename

from . import kinds as geometry_kinds
from .contract import CLAMP_TOLERANCE_PX
from .geometry import clamp_near, is_finite_number, json_number
from .images import ImageError, image_size

__all__ = ["POLYGON_MODES", "CocoConversion", "category_descs", "coco_to_records", "convert_coco_file"]

PolygonMode = Literal["bbox", "quad", "polygon"]
POLYGON_MODES: tuple[str, ...] = ("bbox", "quad", "polygon")
"""How masks are written: ``bbox`` (default) every object as its COCO bbox; ``quad`` a single 4-point
polygon as a quad, every other mask as its bbox; ``polygon`` a single polygon of 3 or more points as a
polygon, every other mask as its bbox."""
_BOX, _QUAD, _POLYGON = "bbox_2d", "quad", "polygon"  # the geometry kinds (src/datasets/kinds/) COCO gives

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
    # Counts that are not skips: each geometry kind's key and the change notes (CROWD, POLYGON_BBOX, ...)
    notes: Counter = field(default_factory=Counter)


def _as_size(value: object) -> int | None:
    # COCO writers sometimes store sizes as 640.0; an integral float is still a size.
    if is_finite_number(value) and float(value).is_integer() and value > 0:
        return int(value)
    return None


_DECIMAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")

# Summary notes: every kind of change the conversion makes, by a fixed text.
CROWD = "crowd regions -> ignore regions"
POLYGON_BBOX = "polygon masks kept as their bbox (--polygons bbox)"
FOUR_POINT_BBOX = "of them 4-point polygons (quads with --polygons quad)"
QUAD = "4-point polygons -> quad"
MANY_POINTS = "polygons of more than 4 points -> bbox"
MULTI_PART = "masks of several polygons -> bbox"
RLE = "RLE masks -> bbox"
BAD_QUAD = "4-point polygons not a proper quad -> bbox"
POLYGON = "single polygons -> polygon"
BAD_POLYGON = "polygons not a proper polygon -> bbox"
CLAMPED = "coordinates clamped (within 1 px)"
EMPTY = "images without annotations (objects: [])"
MIXED_IDS = "image ids matched across string/integer types"


def _key(value: object) -> int | str | None:
    """An id as matched: an int, a string of a decimal integer read as that int ("2299" is 2299), another
    string as itself; None for anything else (it cannot match and must not crash a lookup)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _DECIMAL_INT.fullmatch(value):
        return int(value)
    return value if isinstance(value, (int, str)) else None


def _shown(value: object) -> str:
    """An id with its JSON type, so '2299' (str) and 2299 (int) are told apart."""
    return f"{value!r} ({type(value).__name__})"


def category_descs(names: dict[Any, object]) -> dict[Any, str]:
    """The desc each category's objects get, from ``{category id: its name}``: the name, stripped; for a
    category without a name (not a non-blank string) ``category_id N``; and when two categories end up with
    one desc, each gets `` (category_id N)`` appended, so per-desc metrics never merge two categories.

    The one rule for COCO categories: the JSONL written here and a COCO file read by the evaluation
    (`src.evaluation.coco_files`: as ground truth, and for the ids of `src.infer --coco_results --coco_gt`)
    give a category the same desc, so each finds the other's."""
    base = {cid: name.strip() if isinstance(name, str) and name.strip() else f"category_id {cid}"
            for cid, name in names.items()}
    counts = Counter(base.values())
    return {cid: f"{desc} (category_id {cid})" if counts[desc] > 1 else desc for cid, desc in base.items()}


def _decimal_sum(a: float, b: float) -> float:
    """a + b as the decimals the file wrote (repr gives them back), then the nearest float: no float noise."""
    return float(Decimal(repr(float(a))) + Decimal(repr(float(b))))


def _clamp(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int] | None:
    """Clamp ``points`` (2k,) into the image (the contract's rule, `geometry.clamp_near`); ``None`` if any is more
    than the tolerance out."""
    clamped, moved, outside = clamp_near(points, width, height, CLAMP_TOLERANCE_PX)
    return None if outside else (clamped, moved)


def _mask_kind(segmentation: object) -> str | None:
    """What a segmentation is: "quad" (one polygon of 4 points), "many" (one of more), "parts" (several
    polygons), "rle", or None (none, or not a usable polygon)."""
    if isinstance(segmentation, dict):
        return "rle"
    if not isinstance(segmentation, list) or not segmentation:
        return None
    if len(segmentation) > 1:
        return "parts"
    polygon = segmentation[0]
    if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
        return None
    return "quad" if len(polygon) == 8 else "many"


def _quad_from(segmentation: object) -> np.ndarray | None:
    """The 8 values of a segmentation that is exactly one 4-point polygon of finite numbers, else ``None``."""
    if _mask_kind(segmentation) != "quad" or not all(is_finite_number(v) for v in segmentation[0]):
        return None
    return np.array(segmentation[0], dtype=np.float64)


def _polygon_from(segmentation: object) -> np.ndarray | None:
    """The values of a segmentation that is exactly one polygon of 3 or more points of finite numbers, else
    ``None``."""
    if _mask_kind(segmentation) not in ("quad", "many") or not all(is_finite_number(v) for v in segmentation[0]):
        return None
    return np.array(segmentation[0], dtype=np.float64)


class _Converter:
    def __init__(self, coco: dict, images_dir: Path, out_dir: Path, size_fn: SizeFn, ann_file: str,
                 polygons: PolygonMode = "bbox") -> None:
        if polygons not in POLYGON_MODES:
            raise ValueError(f"polygons must be one of {list(POLYGON_MODES)}, got {polygons!r}")
        self.polygons = polygons
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

    def categories(self) -> dict[Any, dict]:
        """Each category with a name (by its matched id) as the object keys it gives: desc (`category_descs`),
        category_id, supercategory."""
        cats = {_key(c.get("id")): c for c in self.coco.get("categories") or []
                if isinstance(c, dict) and _key(c.get("id")) is not None}
        descs = category_descs({key: cat.get("name") for key, cat in cats.items()})
        found: dict[Any, dict] = {}
        for key, cat in cats.items():
            if isinstance(cat.get("name"), str) and cat["name"].strip():
                keys: dict[str, Any] = {"desc": descs[key]}
                if isinstance(key, int) and -(2**63) < key < 2**63:
                    keys["category_id"] = key
                if isinstance(cat.get("supercategory"), str) and cat["supercategory"].strip():
                    keys["supercategory"] = cat["supercategory"]
                found[key] = keys
        return found

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
        if _key(image_id) in seen:
            self.skip("image", where, "duplicate image id", f" ({_shown(image_id)}, the same value as an earlier one)")
            return None
        seen.add(_key(image_id))
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
        return _key(image_id), {"images": [relative], "objects": [], "width": width, "height": height}

    # ------------------------------------------------------------------ annotations

    def annotation(self, ann: dict, record: dict, keys: dict, where: str) -> dict | None:
        width, height = record["width"], record["height"]
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_finite_number(v) for v in bbox):
            self.skip("annotation", where, "bbox must be [x, y, w, h] with 4 finite numbers", f" (got {bbox!r})")
            return None
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            self.skip("annotation", where, "zero-area bbox", f" (w={w:g}, h={h:g})")
            return None
        crowd = bool(ann.get("iscrowd"))
        extra = {**keys, "ignore": True} if crowd else keys
        mask = _mask_kind(ann.get("segmentation"))
        shape = (_quad_from(ann.get("segmentation")) if self.polygons == "quad" else
                 _polygon_from(ann.get("segmentation")) if self.polygons == "polygon" else None)
        kind = _QUAD if self.polygons == "quad" else _POLYGON
        obj = self.kind_object(kind, shape, width, height, extra) if shape is not None else None
        if obj is None:
            obj = self.box_object(bbox, width, height, extra, where)
        if obj is None:
            return None
        self.result.notes[CROWD] += crowd
        if _BOX not in obj:
            self.result.notes[QUAD if kind == _QUAD else POLYGON] += 1
        elif self.polygons == "bbox" and mask in ("quad", "many", "parts"):
            self.result.notes[POLYGON_BBOX] += 1
            self.result.notes[FOUR_POINT_BBOX] += mask == "quad"
        elif mask is not None and self.polygons == "polygon":
            self.result.notes[{"quad": BAD_POLYGON, "many": BAD_POLYGON, "parts": MULTI_PART, "rle": RLE}[mask]] += 1
        elif mask is not None:
            reason = {"quad": BAD_QUAD, "many": MANY_POINTS, "parts": MULTI_PART, "rle": RLE}[mask]
            self.result.notes[reason] += 1
        return obj

    def box_object(self, bbox: list, width: int, height: int, keys: dict, where: str) -> dict | None:
        x, y, w, h = (float(v) for v in bbox)
        clamped = _clamp(np.array([x, y, _decimal_sum(x, w), _decimal_sum(y, h)]), width, height)
        if clamped is None:
            detail = f" (bbox {bbox}, image {width}x{height})"
            self.skip("annotation", where, f"bbox outside the image by more than {CLAMP_TOLERANCE_PX:g} px", detail)
            return None
        points, moved = clamped
        if geometry_kinds.get(_BOX).problem(points) is not None:
            self.skip("annotation", where, "zero-area bbox after clamping to the image", f" (bbox {bbox})")
            return None
        self.result.notes[CLAMPED] += moved
        return {_BOX: [json_number(v) for v in points], **keys}

    def kind_object(self, key: str, values: np.ndarray, width: int, height: int, keys: dict) -> dict | None:
        """The object of geometry kind `key` (a mask's polygon), clamped and in the kind's stored order, or None
        when the kind's rules refuse it or it lies more than the tolerance outside the image."""
        kind = geometry_kinds.get(key)
        clamped = _clamp(values, width, height)
        if clamped is None or kind.problem(clamped[0]) is not None:
            return None
        points, moved = clamped
        self.result.notes[CLAMPED] += moved
        ordered = kind.canonical(points[None])[0] + 0.0  # +0.0: no -0.0 in the output
        return {key: [json_number(v) for v in ordered], **keys}

    # ------------------------------------------------------------------ all

    def run(self) -> _Converted:
        categories = self.categories()
        records: dict[Any, dict] = {}
        skipped_images: set = set()
        seen: set = set()
        id_types: dict[Any, type] = {}  # the JSON type each kept image's id was written with
        for image in self.coco.get("images") or []:
            entry = self.image_entry(image, seen)
            if entry is not None:
                records[entry[0]] = entry[1]
                id_types[entry[0]] = type(image["id"])
            elif isinstance(image, dict) and _key(image.get("id")) not in records:
                # A duplicate id's annotations belong to the first entry, which was kept.
                skipped_images.add(_key(image.get("id")))
        for ann in self.coco.get("annotations") or []:
            if not isinstance(ann, dict):
                self.skip("annotation", f"annotation {ann!r}"[:80], "annotation must be an object")
                continue
            raw_id = ann.get("image_id")
            image_id = _key(raw_id)
            where = f"annotation id {ann.get('id')} (image id {raw_id})"
            if image_id in skipped_images:
                # One line per skipped image is enough; its annotations are only counted.
                self.result.skips.append(_Skip(what="annotation", reason=_IMAGE_SKIPPED, message=""))
                continue
            if image_id not in records:
                types = sorted({t.__name__ for t in id_types.values()})
                known = f"; the images' ids are {' and '.join(types)}" if types else "; the file lists no image"
                self.skip("annotation", where, "unknown image_id", f" ({_shown(raw_id)}{known})")
                continue
            keys = categories.get(_key(ann.get("category_id")))
            if keys is None:
                self.skip(
                    "annotation",
                    where,
                    "unknown category_id (or category without a name)",
                    f" ({_shown(ann.get('category_id'))})",
                )
                continue
            obj = self.annotation(ann, records[image_id], keys, where)
            if obj is not None:
                records[image_id]["objects"].append(obj)
                self.result.notes[MIXED_IDS] += type(raw_id) is not id_types[image_id]
        self.result.records = list(records.values())
        self.result.notes[EMPTY] += sum(not r["objects"] for r in self.result.records)
        kinds = Counter(next(k for k in obj if k in geometry_kinds.KINDS)
                        for r in self.result.records for obj in r["objects"])
        self.result.notes.update(kinds)
        return self.result


_NOTE_ORDER = (CROWD, POLYGON_BBOX, FOUR_POINT_BBOX, QUAD, POLYGON, MANY_POINTS, MULTI_PART, RLE, BAD_QUAD,
               BAD_POLYGON, CLAMPED, EMPTY, MIXED_IDS)


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
    polygons: PolygonMode = "bbox",
) -> tuple[list[dict], list[str]]:
    """Convert a loaded COCO detection dict to contract JSONL objects (`polygons`: see `POLYGON_MODES`).

    Returns ``(records, problems)``: one dict per usable COCO image (as written to the JSONL:
    image path relative to ``out_dir``) and one line per skipped image or annotation, prefixed
    with ``ann_file``. Image files (``images_dir / file_name``) are only touched through
    ``size_fn``, which must return the displayed ``(width, height)`` or raise
    :class:`~src.datasets.images.ImageError`. Raises ``ValueError`` if ``coco`` lacks the
    ``images`` / ``annotations`` / ``categories`` lists.
    """
    _check_coco(coco)
    result = _Converter(coco, images_dir, out_dir, size_fn, ann_file, polygons).run()
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
    """``{"bbox_2d": n, "quad": m}``, and ``"polygon"`` with ``polygons="polygon"``."""
    annotations_skipped: dict[str, int]
    """Skipped annotations by reason (``"image skipped"``: their image was skipped)."""
    notes: dict[str, int]
    """Every kind of change that is not a skip, counted (crowd regions made ignore regions, masks reduced to
    boxes or quads, clamped coordinates, images without annotations, ids matched across types)."""
    problems: list[str]
    """One line per skipped image or annotation."""

    @property
    def skipped_anything(self) -> bool:
        return bool(self.images_skipped or self.annotations_skipped)

    def summary(self) -> str:
        """A few lines for the terminal."""
        kinds = ", ".join(f"{count} {k}" for k, count in self.objects_by_kind.items())
        lines = [
            f"wrote {self.images_written} records to {self.out}; images skipped: {self.images_skipped}",
            f"objects: {kinds}",
        ]
        skipped = sum(self.annotations_skipped.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.annotations_skipped.items()))
        lines.append(f"annotations skipped: {skipped}" + (f" ({reasons})" if reasons else ""))
        lines += [f"  {key}: {count}" for key, count in self.notes.items()]
        return "\n".join(lines)


def convert_coco_file(
    ann_file: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    size_fn: SizeFn = image_size,
    polygons: PolygonMode = "bbox",
) -> CocoConversion:
    """Read a COCO JSON file, convert it with :func:`coco_to_records` (`polygons` as there) and write ``out``
    (JSONL).

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
    result = _Converter(coco, Path(images_dir), target.parent, size_fn, str(ann_file), polygons).run()
    with write_then_rename(target) as fh:  # an interrupted or failed write never leaves half a file
        for record in result.records:
            fh.write(json.dumps(record, ensure_ascii=False))
            fh.write("\n")
    n_images = len(coco["images"])
    notes = dict(result.notes)
    written = (_BOX, _QUAD, _POLYGON) if polygons == "polygon" else (_BOX, _QUAD)
    objects = {kind: notes.pop(kind, 0) for kind in written}
    return CocoConversion(
        out=str(target),
        images_written=len(result.records),
        images_skipped=n_images - len(result.records),
        objects_by_kind=objects,
        annotations_skipped=dict(Counter(s.reason for s in result.skips if s.what == "annotation")),
        notes={key: notes[key] for key in _NOTE_ORDER if notes.get(key)},
        problems=[skip.message for skip in result.skips if skip.message],
    )
