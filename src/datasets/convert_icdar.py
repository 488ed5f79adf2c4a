"""ICDAR-2015-style text files -> the grounding JSONL contract (:mod:`src.datasets.contract`).

One ground-truth file per image (``gt_img_12.txt`` for ``img_12.jpg``: the ``gt_`` prefix dropped, any
image extension), one text line per word::

    x1,y1,x2,y2,x3,y3,x4,y4,transcription

* the file may start with a UTF-8 BOM (the published ICDAR 2015 files do); blank lines are skipped;
* the transcription is everything after the eighth comma, so it may hold commas itself;
* ``###`` marks an illegible region: it becomes an ignore region (``"ignore": true``, no desc) kept as
  its quad, so training leaves it out and evaluation neither rewards nor punishes a prediction on it;
* a legible word's ``desc`` is `desc` with ``{text}`` replaced by the transcription (default ``"text"``,
  the detection task; ``"text: {text}"`` keeps the transcription);
* the quad is written in the canonical vertex order (:func:`~src.datasets.geometry.canonical_quad8`);
  coordinates up to 1 px outside the image are clamped and counted; a quad that is not a proper
  quadrilateral (a bow-tie, repeated points) becomes the box bounding its points, counted;
* a line that cannot be read (fewer than 9 fields, a coordinate that is not a number, further than 1 px
  outside the image, an empty desc) is skipped and reported as ``file:line: reason (the line)``; a
  ground-truth file whose image is missing or unreadable is skipped and reported.

Every change is counted in the summary; nothing is dropped without a line saying so.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.config.atomic import write_then_rename

from . import kinds as geometry_kinds
from .contract import CLAMP_TOLERANCE_PX
from .geometry import clamp_near, json_number
from .images import ImageError, image_size

__all__ = ["IGNORE_TEXT", "IMAGE_SUFFIXES", "IcdarConversion", "IcdarRecords", "convert_icdar_file", "gt_files",
           "icdar_records", "image_for"]

IGNORE_TEXT = "###"
"""The transcription ICDAR uses for an illegible ("do not care") region."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp", ".webp", ".tif", ".tiff")

SizeFn = Callable[[Path], tuple[int, int]]

WORDS = "words"
IGNORED = "### regions -> ignore regions (quads)"
CLAMPED = "coordinates clamped (within 1 px)"
NOT_A_QUAD = "quads not proper quadrilaterals -> their bounding box"
ALL_IGNORED = "images whose every region is ### (left out of training, see the data summary)"
EMPTY = "images without any line (objects: [])"
BOM = "files starting with a UTF-8 BOM"
_NOTE_ORDER = (WORDS, IGNORED, CLAMPED, NOT_A_QUAD, ALL_IGNORED, EMPTY, BOM)


@dataclass(slots=True)
class IcdarRecords:
    """The records of a conversion, one line per skipped file or line, and the counts of every change."""

    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lines_skipped: int = 0
    files_skipped: int = 0
    notes: Counter = field(default_factory=Counter)


def _natural(path: Path) -> list:
    """Sort key: gt_img_2 before gt_img_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def gt_files(gt: Path) -> list[Path]:
    """The ground-truth files `gt` names: itself when a file, else its ``*.txt`` files in natural order."""
    return [gt] if gt.is_file() else sorted((p for p in gt.glob("*.txt") if p.is_file()), key=_natural)


def image_for(gt_file: Path, images_dir: Path) -> Path | None:
    """The image of a ground-truth file: its stem without the ``gt_`` prefix, with the first suffix found."""
    stem = gt_file.stem[3:] if gt_file.stem.startswith("gt_") else gt_file.stem
    for suffix in IMAGE_SUFFIXES:
        candidate = images_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_QUAD, _BOX = geometry_kinds.get("quad"), geometry_kinds.get("bbox_2d")  # an ICDAR line: a quad, else its box


def _line_object(fields: list[str], width: int, height: int, desc: str,
                 notes: Counter) -> tuple[dict | None, str | None]:
    """(the contract object of one split line, None) or (None, why the line is skipped)."""
    values = [_number(v.strip()) for v in fields[:8]]
    if any(v is None for v in values):
        return None, "coordinates must be 8 finite numbers"
    points = np.array(values, dtype=np.float64)
    clamped, moved, outside = clamp_near(points, width, height, CLAMP_TOLERANCE_PX)
    if outside:
        return None, f"a point lies outside the image [0, {width}] x [0, {height}] by more than 1 px"
    transcription = fields[8]
    ignore = transcription.strip() == IGNORE_TEXT
    if not ignore:
        desc = desc.replace("{text}", transcription)
        if not desc.strip():
            return None, "empty description (the transcription is empty and --desc is '{text}')"
    obj: dict
    if _QUAD.problem(clamped) is None:
        obj = {_QUAD.key: [json_number(v) for v in _QUAD.canonical(clamped[None])[0] + 0.0]}
    else:
        box = _QUAD.xyxy(clamped[None])[0] + 0.0
        if _BOX.problem(box) is not None:
            return None, "zero-area region"
        obj = {_BOX.key: [json_number(v) for v in box]}
        notes[NOT_A_QUAD] += 1
    notes[CLAMPED] += moved
    if ignore:
        obj["ignore"] = True
        notes[IGNORED] += 1
    else:
        obj["desc"] = desc
        notes[WORDS] += 1
    return obj, None


def icdar_records(gt: Path, images_dir: Path, out_dir: Path, *, desc: str = "text",
                  size_fn: SizeFn = image_size) -> IcdarRecords:
    """Convert every ground-truth file `gt` names (see `gt_files`) to contract records, image paths relative to
    `out_dir`. Pure but for reading the text files and `size_fn` (the displayed size of an image, or
    ImageError). Returns the records, one line per skipped file or line, and the counts."""
    result = IcdarRecords()
    images_dir, out_dir = Path(os.path.abspath(images_dir)), Path(os.path.abspath(out_dir))
    for gt_file in gt_files(gt):
        image = image_for(gt_file, images_dir)
        if image is None:
            result.problems.append(f"{gt_file}: no image {gt_file.stem.removeprefix('gt_')}.* "
                                   f"({', '.join(IMAGE_SUFFIXES[:3])}, ...) in {images_dir}; file skipped")
            result.files_skipped += 1
            continue
        try:
            width, height = size_fn(image)
        except ImageError as exc:
            result.problems.append(f"{gt_file}: image {image}: {exc.reason}; file skipped")
            result.files_skipped += 1
            continue
        raw = gt_file.read_bytes()
        if raw.startswith(b"\xef\xbb\xbf"):
            result.notes[BOM] += 1
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            result.problems.append(f"{gt_file}: not UTF-8 (byte {exc.start + 1}); file skipped")
            result.files_skipped += 1
            continue
        objects = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split(",", 8)
            obj, reason = ((None, "needs 8 coordinates and a transcription, separated by commas")
                           if len(fields) < 9 else _line_object(fields, width, height, desc, result.notes))
            if obj is None:
                result.problems.append(f"{gt_file}:{number}: {reason} ({line.strip()[:80]})")
                result.lines_skipped += 1
            else:
                objects.append(obj)
        if not objects:
            result.notes[EMPTY] += 1
        elif all(o.get("ignore") for o in objects):
            result.notes[ALL_IGNORED] += 1
        result.records.append({"images": [Path(os.path.relpath(image, out_dir)).as_posix()], "objects": objects,
                               "width": width, "height": height})
    return result


@dataclass(frozen=True, slots=True)
class IcdarConversion:
    """What :func:`convert_icdar_file` wrote and skipped."""

    out: str
    """Absolute path of the JSONL written."""
    records: int
    files_skipped: int
    lines_skipped: int
    notes: dict[str, int]
    """Every kind of change, counted (see the module docstring)."""
    problems: list[str]
    """One line per skipped file or line."""

    @property
    def skipped_anything(self) -> bool:
        """True when some file or line was not converted."""
        return bool(self.files_skipped or self.lines_skipped)

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"wrote {self.records} records to {self.out}; ground-truth files skipped: {self.files_skipped}, "
                 f"lines skipped: {self.lines_skipped}"]
        lines += [f"  {key}: {count}" for key, count in self.notes.items()]
        return "\n".join(lines)


def convert_icdar_file(gt: str | os.PathLike[str], images_dir: str | os.PathLike[str],
                       out: str | os.PathLike[str], *, desc: str = "text", overwrite: bool = False,
                       size_fn: SizeFn = image_size) -> IcdarConversion:
    """Convert ICDAR text files (`gt`: one file or a folder of ``*.txt``) with :func:`icdar_records` and write
    `out` (JSONL). Refuses an existing `out` (FileExistsError) unless `overwrite`; raises FileNotFoundError
    when `gt` names no ground-truth file. Usable records are written even when some lines are skipped."""
    gt, target = Path(gt), Path(os.path.abspath(out))
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    if not gt.exists() or not gt_files(gt):
        raise FileNotFoundError(f"{gt}: no ground-truth file (a .txt file, or a folder holding *.txt files)")
    result = icdar_records(gt, Path(images_dir), target.parent, desc=desc, size_fn=size_fn)
    with write_then_rename(target) as fh:  # an interrupted or failed write never leaves half a file
        for record in result.records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return IcdarConversion(out=str(target), records=len(result.records), files_skipped=result.files_skipped,
                           lines_skipped=result.lines_skipped,
                           notes={key: result.notes[key] for key in _NOTE_ORDER if result.notes.get(key)},
                           problems=result.problems)
