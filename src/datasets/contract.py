"""The grounding JSONL contract: parsing, checking and writing records.

One JSON object per line::

    {"images": ["images/000001.png"],
     "objects": [{"bbox_2d": [x1, y1, x2, y2], "desc": "red circle"},
                 {"quad": [x1, y1, x2, y2, x3, y3, x4, y4], "desc": "text: ABC"},
                 {"point_2d": [x, y], "desc": "dot"},
                 {"polygon": [x1, y1, x2, y2, x3, y3, ...], "desc": "leaf"}],
     "width": 640, "height": 480,
     "summary": "2 objects: red circle, text: ABC"}

* exactly one image; a relative path is relative to the JSONL file's directory;
* coordinates are float pixels of the displayed (EXIF-oriented) image, in the conventions of
  :mod:`src.datasets.geometry` (``x2``/``y2`` are exclusive edges, like ``getbbox()``); a quad's or a
  polygon's vertices may come in any order and direction: they are stored in the canonical order
  (:func:`~src.datasets.geometry.canonical_polygon`: clockwise on screen from the top-left-most vertex);
* ``width``/``height`` are that displayed image's size;
* each object has exactly one geometry key, one of the registry's kinds (:mod:`src.datasets.kinds`: a box
  ``bbox_2d``, a ``quad``, a point ``point_2d``, a ``polygon`` of 3 or more vertices; each kind's module
  states its rules), and a non-empty ``desc``;
* an object may say ``"ignore": true``: a region to ignore (a COCO ``iscrowd`` region, an ICDAR ``###``
  line, any don't-care area), kept with its geometry; its ``desc`` is then optional. Training leaves it out
  of the answer, evaluation and the rewards neither reward nor punish a prediction on it;
* an object may also carry ``category_id`` (an integer) and ``supercategory`` (a non-empty string), kept
  from the source annotation (COCO); nothing else;
* ``summary`` is optional.

Nothing is repaired silently: coordinates up to 1 px outside the image are clamped and counted
(``Record.clamped``); everything else wrong is reported as a :class:`Problem`, all of them, not
just the first.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from . import kinds
from .geometry import clamp_near, json_number
from .images import ImageError, image_size, load_image
from .objects import GeoObject

__all__ = [
    "CLAMP_TOLERANCE_PX",
    "MAX_ASPECT_RATIO",
    "GEOMETRY_KINDS",
    "NO_VALUE",
    "GeometryKind",
    "ImageCheck",
    "GroundingObject",
    "Problem",
    "Record",
    "SourceRef",
    "check_image_file",
    "object_to_json",
    "parse_line",
    "parse_record",
    "record_to_json",
    "write_records",
]

GeometryKind = str  # a key of the geometry-kind registry (src.datasets.kinds.KEYS)
ImageCheck = Literal["decode", "header"] | bool  # how far parse_record checks the image file
GEOMETRY_KINDS: tuple[str, ...] = kinds.KEYS
"""The geometry keys an object may carry, in the registry's order (the index record tables store)."""
RECORD_KEYS: tuple[str, ...] = ("images", "objects", "width", "height", "summary")
_REQUIRED_RECORD_KEYS = ("images", "objects", "width", "height")
OBJECT_KEYS: tuple[str, ...] = (*kinds.KEYS, "desc", "ignore", "category_id", "supercategory")
CLAMP_TOLERANCE_PX = 1.0
"""Coordinates at most this far outside the image are clamped onto its edge, not rejected."""
MAX_ASPECT_RATIO = 200
"""The longest side over the shortest that Qwen-VL's image processor takes (`smart_resize`'s MAX_RATIO: beyond it
the processor raises in the middle of a run); an image further out is refused when its file is checked."""

_MAX_VALUE_CHARS = 80


class _NoValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()
"""``Problem.value`` when there is no offending value to show (e.g. a missing key)."""


# ---------------------------------------------------------------------------- data types


@dataclass(frozen=True, slots=True, kw_only=True)
class GroundingObject(GeoObject):
    """One annotated object: its geometry (a kind of the registry) in pixels, and its description. It is the
    object record of src/datasets/objects.py (what predictions, metrics and rewards use too) with the
    contract's rules: a registered kind with its count of values, a desc unless it is an ignore region."""

    kind: GeometryKind
    """The geometry's key in the registry (`src.datasets.kinds`), which says what `points` hold."""
    points: tuple[float, ...]
    """The kind's pixel coordinates of the displayed image (interleaved x, y), already clamped into it."""
    desc: str
    """Non-empty description, e.g. ``"red circle"``; ``""`` only for an ignore region written without one."""
    ignore: bool = False
    """A region to ignore (crowd, illegible text, don't care): never in a training answer; a prediction on it
    is neither a true nor a false positive."""
    category_id: int | None = None
    """The source annotation's category id (COCO), when the record gave one."""
    supercategory: str | None = None
    """The source annotation's supercategory (COCO), when the record gave one."""

    def __post_init__(self) -> None:
        if self.kind not in kinds.KINDS:
            raise ValueError(f"kind must be one of {list(GEOMETRY_KINDS)}, got {self.kind!r}")
        if not kinds.KINDS[self.kind].count_ok(len(self.points)):
            spec = kinds.KINDS[self.kind]
            need = spec.values if spec.values is not None else f"at least {spec.min_values} (an even count of)"
            raise ValueError(f"{self.kind} needs {need} values, got {len(self.points)}")
        if not self.desc and not self.ignore:
            raise ValueError("desc may be empty only on an ignore region")


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRef:
    """Where a record came from."""

    file: str
    """Absolute path of the JSONL file."""
    line: int
    """1-based line number."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One valid grounding sample."""

    image: str
    """Absolute path of the image."""
    width: int
    """Displayed (EXIF-oriented) image width in pixels."""
    height: int
    """Displayed image height in pixels."""
    objects: tuple[GroundingObject, ...]
    """Annotated objects, possibly none."""
    summary: str | None = None
    """Optional free-text summary of the image."""
    source: SourceRef
    """File and line this record was read from."""
    clamped: int = 0
    """How many coordinate values were up to 1 px outside the image and clamped onto it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong with one line of a JSONL file."""

    file: str
    """Absolute path of the JSONL file."""
    line: int
    """1-based line number."""
    field: str
    """Dotted path of the offending field, e.g. ``objects[2].bbox_2d``."""
    message: str
    """What is wrong, and where possible how to fix it."""
    value: object = NO_VALUE
    """The offending value, or :data:`NO_VALUE`."""

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}: {self.field}: {self.message}"
        if self.value is NO_VALUE:
            return text
        return f"{text} ({_render_value(self.value)})"


def _render_value(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)  # shown as written in the file
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


class _Problems:
    """Collects the problems of one record."""

    def __init__(self, source: SourceRef) -> None:
        self.source = source
        self.items: list[Problem] = []

    def add(self, field: str, message: str, value: object = NO_VALUE) -> None:
        self.items.append(
            Problem(
                file=self.source.file,
                line=self.source.line,
                field=field,
                message=message,
                value=value,
            )
        )


# ---------------------------------------------------------------------------- reading


def parse_line(file: str, number: int, raw: bytes) -> Iterator[tuple[int, dict | Problem]]:
    """The JSON object on one raw line of `file` (numbered `number`), or the Problem with it; nothing for a
    blank line."""
    try:
        obj = orjson.loads(raw)  # strict JSON, 2-3x faster than json; what it refuses, json decides below
    except orjson.JSONDecodeError:
        pass
    else:
        if type(obj) is dict:
            yield number, obj
            return

    def problem(field: str, message: str, value: object = NO_VALUE) -> tuple[int, Problem]:
        return number, Problem(file=file, line=number, field=field, message=message, value=value)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield problem("line", f"not valid UTF-8 (byte {exc.start + 1})")
        return
    if not text.strip():
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        yield problem("line", f"not valid JSON: {exc.msg} at column {exc.colno}", text.strip())
        return
    except ValueError as exc:  # an integer of over 4,300 digits: Python refuses to convert it (orjson refused it too)
        digits = "".join(c for c in str(exc).partition("value has ")[2] if c.isdigit()) or "over 4300"
        yield problem("line", f"holds a number of {digits} digits, too long to read; the contract's numbers are "
                      f"pixels and ids: write them in at most 19 digits", text.strip())
        return
    if not isinstance(obj, dict):
        yield problem("line", f"must be a JSON object, got {_type_name(obj)}", obj)
        return
    yield number, obj


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if type(value) is kind:
            return name
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse_record(
    obj: dict, source: SourceRef, base_dir: Path, *, check_image: ImageCheck,
    image_sizes: dict[str, tuple[int, int] | ImageError] | None = None,
) -> tuple[Record | None, list[Problem]]:
    """Check one decoded JSONL object against the contract.

    Returns ``(record, [])`` when it is valid, else ``(None, problems)`` with every problem
    found. Relative image paths are resolved against ``base_dir``. With ``check_image`` true
    (or "decode") the image must exist, decode fully and have the record's ``width``/``height``
    after EXIF orientation; "header" checks existence and size from the header only (fast, used
    before training; a truncated file is then caught when the sample is encoded); false skips it.
    `image_sizes` remembers each image's header across records (an image annotated by several records
    is read once).
    """
    report = _Problems(source)
    if not isinstance(obj, dict):
        report.add("line", f"must be a JSON object, got {_type_name(obj)}", obj)
        return None, report.items
    _check_keys(obj, report)
    image = _parse_images(obj.get("images", NO_VALUE), base_dir, report)
    width = _parse_size(obj, "width", report)
    height = _parse_size(obj, "height", report)
    summary = _parse_summary(obj.get("summary"), report)
    objects, clamped = _parse_objects(obj.get("objects", NO_VALUE), width, height, report)
    if check_image and image is not None:
        wrong = check_image_file(image, width, height, decode=check_image != "header", sizes=image_sizes)
        if wrong is not None:
            report.add(*wrong, image)
    if report.items:
        return None, report.items
    assert image is not None and width is not None and height is not None and objects is not None
    record = Record(
        image=image,
        width=width,
        height=height,
        objects=objects,
        summary=summary,
        source=source,
        clamped=clamped,
    )
    return record, []


def _check_keys(obj: dict, report: _Problems) -> None:
    allowed = ", ".join(RECORD_KEYS)
    for key in obj:
        if key not in RECORD_KEYS:
            report.add(str(key), f"unknown key; allowed keys are: {allowed}")
    for key in _REQUIRED_RECORD_KEYS:
        if key not in obj:
            report.add(key, "required key is missing")


def _parse_images(value: object, base_dir: Path, report: _Problems) -> str | None:
    if value is NO_VALUE:
        return None
    if not isinstance(value, list) or len(value) != 1:
        report.add("images", "must be a list with exactly one image path", value)
        return None
    path = value[0]
    if not isinstance(path, str) or not path.strip():
        report.add("images[0]", "must be a non-empty string (an image path)", path)
        return None
    # normpath, not resolve(): keep symlinked dataset layouts as the user wrote them.
    return os.path.normpath(os.path.join(os.path.abspath(base_dir), path))


def _parse_size(obj: dict, key: str, report: _Problems) -> int | None:
    if key not in obj:
        return None
    value = obj[key]
    if not _is_positive_int(value):
        report.add(key, "must be a positive integer (pixels)", value)
        return None
    return value


def _parse_summary(value: object, report: _Problems) -> str | None:
    if value is None or isinstance(value, str):
        return value
    report.add("summary", "must be a string when present", value)
    return None


def _parse_objects(
    value: object, width: int | None, height: int | None, report: _Problems
) -> tuple[tuple[GroundingObject, ...] | None, int]:
    if value is NO_VALUE:
        return None, 0
    if not isinstance(value, list):
        report.add("objects", "must be a list of objects (it may be empty)", value)
        return None, 0
    objects, clamped = [], 0
    for index, item in enumerate(value):
        parsed, count = _parse_object(f"objects[{index}]", item, width, height, report)
        clamped += count
        if parsed is not None:
            objects.append(parsed)
    return tuple(objects), clamped


def _parse_object(
    field: str, item: object, width: int | None, height: int | None, report: _Problems
) -> tuple[GroundingObject | None, int]:
    if not isinstance(item, dict):
        report.add(field, f"must be a JSON object, got {_type_name(item)}", item)
        return None, 0
    for key in item:
        if key not in OBJECT_KEYS:
            report.add(f"{field}.{key}", f"unknown key; allowed keys are: {', '.join(OBJECT_KEYS)}")
    ignore = _parse_ignore(field, item, report)
    desc = _parse_desc(field, item, report, optional=ignore is True)
    category_id, supercategory = _parse_category(field, item, report)
    present = [kind for kind in GEOMETRY_KINDS if kind in item]
    if len(present) != 1:
        found = "neither" if not present else "both" if len(present) == 2 else ", ".join(present)
        report.add(field, f"needs exactly one of {kinds.keys_text()}, found {found}")
        return None, 0
    kind = present[0]
    points, clamped = _parse_points(f"{field}.{kind}", kind, item[kind], width, height, report)
    if points is None or desc is None or ignore is None or category_id is _BAD or supercategory is _BAD:
        return None, clamped
    return GroundingObject(kind=kind, points=points, desc=desc, ignore=ignore, category_id=category_id,
                           supercategory=supercategory), clamped


_BAD: Any = object()  # an optional key present with a wrong value (already reported)


def _parse_ignore(field: str, item: dict, report: _Problems) -> bool | None:
    value = item.get("ignore", False)
    if type(value) is not bool:
        report.add(f"{field}.ignore", "must be true or false (true: a region to ignore)", value)
        return None
    return value


def _parse_desc(field: str, item: dict, report: _Problems, *, optional: bool = False) -> str | None:
    """The object's desc; "" when it may be left out (an ignore region) and is."""
    if "desc" not in item:
        if optional:
            return ""
        report.add(f"{field}.desc", "required key is missing (only an object with \"ignore\": true may omit it)")
        return None
    desc = item["desc"]
    if not isinstance(desc, str) or not desc.strip():
        report.add(f"{field}.desc", "must be a non-empty string", desc)
        return None
    return desc


def _parse_category(field: str, item: dict, report: _Problems) -> tuple[Any, Any]:
    """(category_id, supercategory), None where absent, _BAD where wrong (reported)."""
    category_id, supercategory = item.get("category_id"), item.get("supercategory")
    if "category_id" in item and (type(category_id) is not int or not -(2**63) < category_id < 2**63):
        report.add(f"{field}.category_id", "must be an integer (64-bit)", category_id)
        category_id = _BAD
    if "supercategory" in item and (not isinstance(supercategory, str) or not supercategory.strip()):
        report.add(f"{field}.supercategory", "must be a non-empty string", supercategory)
        supercategory = _BAD
    return category_id, supercategory


def _parse_points(
    field: str,
    kind: str,
    value: object,
    width: int | None,
    height: int | None,
    report: _Problems,
) -> tuple[tuple[float, ...] | None, int]:
    spec = kinds.get(kind)
    if not isinstance(value, list) or not spec.count_ok(len(value)):
        report.add(field, f"must be {spec.count_text()}", value)
        return None, 0
    if not all(_is_number(v) for v in value):
        report.add(field, "must contain only numbers", value)
        return None, 0
    try:
        points: list[float] | None = [float(v) for v in value]
    except OverflowError:  # an integer literal beyond any float
        report.add(field, "holds a number too large for a coordinate", value)
        return None, 0
    if not all(math.isfinite(v) for v in points):
        report.add(field, "must contain only finite numbers (no NaN or Infinity)", value)
        return None, 0
    clamped = 0
    # With an invalid width/height (already reported) the bounds are unknown, but the shape
    # of the box or quad can still be checked.
    if width is not None and height is not None:
        points, clamped = _clamp_into_image(field, points, width, height, report)
    if points is None:
        return None, 0
    reason = spec.problem(points)
    if reason is not None:
        report.add(field, reason, value)
        return None, clamped
    # The stored form (one vertex order for every quad and polygon, whatever order the file wrote).
    points = spec.canonical(np.asarray([points], dtype=np.float64))[0].tolist()
    return tuple(points), clamped


def _clamp_into_image(
    field: str, points: list[float], width: int, height: int, report: _Problems
) -> tuple[list[float] | None, int]:
    clipped, clamped, outside = clamp_near(points, width, height, CLAMP_TOLERANCE_PX)
    if outside:
        report.add(
            field,
            f"coordinates outside the image [0, {width}] x [0, {height}] by more than {CLAMP_TOLERANCE_PX:g} px",
            points,
        )
        return None, 0
    return clipped.tolist(), clamped


def check_image_file(image: str, width: int | None, height: int | None, *, decode: bool,
                     sizes: dict[str, tuple[int, int] | ImageError] | None = None) -> tuple[str, str] | None:
    """(field, message) of what is wrong with a record's image file (missing, unreadable, not `width` x
    `height` after EXIF orientation, sides further apart than `MAX_ASPECT_RATIO`), or None. `decode` reads every
    pixel, else the header only; `sizes` remembers what each image gave."""
    found = sizes.get(image) if sizes is not None else None
    if found is None:
        try:
            if decode:
                with load_image(image) as img:
                    found = img.size
            else:
                found = image_size(image)
        except ImageError as exc:
            found = exc
        if sizes is not None:
            sizes[image] = found
    if isinstance(found, ImageError):
        return "images[0]", found.reason
    if width is not None and height is not None and found != (width, height):
        message = f"record says {width}x{height} but the image is {found[0]}x{found[1]} (after EXIF orientation)"
        if found == (height, width):
            # The usual cause: a size (and coordinates) taken from the stored pixels of an EXIF-turned photo.
            message += ("; width and height are swapped: they, and every coordinate, describe the image as "
                        "displayed, turned by its EXIF orientation, not as its pixels are stored")
        return "width/height", message
    long_side, short_side = max(found), min(found)
    if long_side > MAX_ASPECT_RATIO * short_side:
        return ("images[0]", f"the image is {found[0]}x{found[1]}, {long_side / short_side:g} times longer than wide; "
                f"Qwen-VL's image processor refuses a ratio over {MAX_ASPECT_RATIO} (smart_resize): crop or pad it")
    return None


# ---------------------------------------------------------------------------- writing


def object_to_json(obj: GroundingObject) -> dict[str, Any]:
    """The JSONL object for one object: geometry, desc (left out when empty), and ``ignore``/``category_id``/
    ``supercategory`` only when set. Integral coordinates are written as ints."""
    out: dict[str, Any] = {obj.kind: [json_number(v) for v in obj.points]}
    if obj.desc:
        out["desc"] = obj.desc
    if obj.ignore:
        out["ignore"] = True
    if obj.category_id is not None:
        out["category_id"] = obj.category_id
    if obj.supercategory is not None:
        out["supercategory"] = obj.supercategory
    return out


def record_to_json(record: Record, relative_to: Path | None) -> dict:
    """The JSONL object for ``record`` (the inverse of :func:`parse_record`).

    The image path is written relative to ``relative_to`` (the directory of the JSONL file
    being written) when given, else absolute. Integral coordinates are written as ints.
    """
    image = record.image if relative_to is None else os.path.relpath(record.image, relative_to)
    out: dict[str, Any] = {
        "images": [Path(image).as_posix()],
        "objects": [object_to_json(obj) for obj in record.objects],
        "width": record.width,
        "height": record.height,
    }
    if record.summary is not None:
        out["summary"] = record.summary
    return out


def write_records(path: str | os.PathLike[str], records: list[Record]) -> None:
    """Write ``records`` to a JSONL file, image paths relative to the file's directory."""
    target = Path(os.path.abspath(path))
    with open(target, "w", encoding="utf-8", newline="\n") as fh:
        for record in records:
            fh.write(json.dumps(record_to_json(record, target.parent), ensure_ascii=False))
            fh.write("\n")
