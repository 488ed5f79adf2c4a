"""Pictures of ground truth and predictions (`python -m src.vis` draws them).

One PNG per record: the image (read by the project's one loader, EXIF applied) with its GT objects
drawn as each geometry kind draws itself (`GeometryKind.draw`, src/datasets/kinds/: boxes, quads and polygons
as outlines, points as dots) with their labels, and, given predictions, those too, coloured by how
they match at IoU 0.5 (the greedy, score-ordered matching of src/evaluation/metrics.py):

* matched prediction: green; false-positive prediction: red;
* missed GT: orange (thick); matched GT: blue (thin). Without predictions every GT is blue;
* an ignore region (crowd, illegible text, don't care) of the GT: grey, dashed, labelled
  "ignore"; a prediction on one (neither true nor false positive): grey.

Small images are scaled up by a whole factor (nearest neighbour) until the shorter side reaches
``--min_side``, and coordinates with them, never taking the longer side past `MAX_SIDE` (a strip of text 4000 x 2
px would otherwise become a 768,000 x 384 PNG that Pillow itself refuses to open as a decompression bomb).
``index.html`` is a contact sheet linking every PNG with its counts.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from src.config.atomic import write_text_then_rename
from src.datasets import kinds as geometry_kinds
from src.datasets.contract import Record
from src.datasets.images import load_image
from src.evaluation.metrics import Obj, desc_key, gt_objects, match_greedy, pairwise_iou, prediction_objects

__all__ = ["BLUE", "GREEN", "GREY", "ORANGE", "RED", "RecordView", "png_name", "render_record", "scale_factor",
           "write_index"]

GREEN = (0, 200, 0)
RED = (230, 0, 0)
ORANGE = (255, 140, 0)
BLUE = (0, 90, 255)
GREY = (150, 150, 150)
_DASH = 6  # pixels drawn, then as many skipped, along an ignore region's outline
MIN_SIDE = 384
MAX_SIDE = 4096  # the longer side that scaling up stops at (an image already longer is drawn at its size)
_MATCH_IOU = 0.5


@dataclass(frozen=True, slots=True)
class RecordView:
    """What one rendered record showed: counts for the contact sheet."""

    png: str
    source: str
    n_gt: int
    n_pred: int | None
    tp: int | None
    parse_error: str | None
    error: str | None = None
    """Why no PNG was written (unreadable image), else None."""
    n_ignore: int = 0
    """Ignore regions of the GT (not in ``n_gt``)."""
    on_ignore: int = 0
    """Predictions on ignore regions: neither true nor false positives."""


def scale_factor(width: int, height: int, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> int:
    """The whole factor (>= 1) that brings the shorter side to at least ``min_side``, but never the longer side
    past ``max_side`` (the smaller factor wins; 1 when the image is already that long)."""
    wanted = math.ceil(min_side / max(1, min(width, height)))
    return max(1, min(wanted, max_side // max(1, width, height)))


def _polygon(obj: Obj, sx: float, sy: float, size: tuple[int, int]) -> list[tuple[float, float]]:
    outline = geometry_kinds.get(obj.kind).outline(obj.points, sx, sy)
    # Clamped so an edge on the image border stays visible.
    return [(min(max(x, 0.0), size[0] - 1.0), min(max(y, 0.0), size[1] - 1.0)) for x, y in outline]


def _dashed_polygon(draw: ImageDraw.ImageDraw, poly: list[tuple[float, float]], colour: tuple[int, int, int],
                    width: int) -> None:
    # PIL has no dash pattern: each edge is cut into pieces of _DASH pixels, every other one drawn.
    for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1], strict=True):
        length = math.hypot(x2 - x1, y2 - y1)
        steps = max(1, int(length // _DASH))
        for k in range(0, steps, 2):
            t1, t2 = k / steps, min(1.0, (k + 1) / steps)
            draw.line((x1 + (x2 - x1) * t1, y1 + (y2 - y1) * t1, x1 + (x2 - x1) * t2, y1 + (y2 - y1) * t2),
                      fill=colour, width=width)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(draw: ImageDraw.ImageDraw, poly: list[tuple[float, float]], text: str, colour: tuple[int, int, int],
           above: bool, font, size: tuple[int, int]) -> None:
    if not text:
        return
    x = min(p[0] for p in poly)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 2
    y = min(p[1] for p in poly) - h - 1 if above else max(p[1] for p in poly) + 2
    x, y = min(max(x, 0), max(0, size[0] - w)), min(max(y, 0), max(0, size[1] - h))
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=colour)
    draw.text((x + 2 - left, y + 1 - top), text, fill=(255, 255, 255), font=font)


def render_record(record: Record, row: dict | None, with_pred: bool, *, min_side: int = MIN_SIDE,
                  match_labels: bool = False, iou_type: str = "auto") -> tuple[Image.Image, int, int | None, int]:
    """The annotated image of one record, its GT count (ignore regions left out), and (with predictions) its
    match count and the number of predictions on ignore regions (0 without predictions).

    Coordinates are in pixels of ``record.width`` x ``record.height``, or of the image as decoded where the
    record gives no size (0: a COCO image entry without width/height). Raises :class:`ImageError` when the
    image cannot be read. ``match_labels`` makes a match
    need equal descriptions (default: geometry only, like class-agnostic AP).
    """
    img = load_image(record.image)
    # A COCO image entry without width/height reads as size 0: the decoded image's own size stands in.
    width, height = record.width or img.width, record.height or img.height
    factor = scale_factor(*img.size, min_side=min_side)
    if factor > 1:
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    sx, sy = img.width / width, img.height / height
    draw = ImageDraw.Draw(img)
    font = _font(max(11, min(img.size) // 32))
    gts, ignore = gt_objects(record)
    dets = prediction_objects(row)[0] if with_pred else []
    tp = None
    on_ignore = np.zeros(len(dets), dtype=bool)
    gt_colour, gt_width = [BLUE] * len(gts), [2] * len(gts)
    if with_pred:
        ious = pairwise_iou(dets, gts, iou_type, ignore, (width, height))
        if match_labels:  # an ignore region without a desc applies to every desc
            same = np.array([[desc_key(d.desc) == desc_key(g.desc) or (ig and not g.desc)
                              for g, ig in zip(gts, ignore, strict=True)]
                             for d in dets], dtype=bool).reshape(ious.shape)
            ious = np.where(same, ious, 0.0)
        det_to_gt, gt_to_det = match_greedy(ious, np.array([d.score for d in dets]), _MATCH_IOU, ignore)
        on_ignore = np.array([m >= 0 and bool(ignore[m]) for m in det_to_gt], dtype=bool)
        tp = int(((det_to_gt >= 0) & ~on_ignore).sum())
        gt_colour = [BLUE if m >= 0 else ORANGE for m in gt_to_det]
        gt_width = [1 if m >= 0 else 3 for m in gt_to_det]
    for obj, colour, width, is_ignore in zip(gts, gt_colour, gt_width, ignore, strict=True):
        poly = _polygon(obj, sx, sy, img.size)
        kind = geometry_kinds.get(obj.kind)
        if is_ignore:
            kind.draw(draw, poly, GREY, 2, dashed=_dashed_polygon)
            _label(draw, poly, f"ignore {obj.desc}".strip(), GREY, True, font, img.size)
            continue
        kind.draw(draw, poly, colour, width)
        _label(draw, poly, obj.desc, colour, True, font, img.size)
    if with_pred:
        for obj, m, ignored in zip(dets, det_to_gt, on_ignore, strict=True):
            colour = GREY if ignored else GREEN if m >= 0 else RED
            poly = _polygon(obj, sx, sy, img.size)
            geometry_kinds.get(obj.kind).draw(draw, poly, colour, 2)
            _label(draw, poly, f"{obj.desc} {obj.score:.2f}", colour, False, font, img.size)
    return img, int((~ignore).sum()), tp, int(on_ignore.sum())


def png_name(index: int, image: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(image).stem)[:60]
    return f"{index:05d}_{stem}.png"


def write_index(out_dir: Path, views: list[RecordView], title: str) -> Path:
    """Write ``index.html`` in ``out_dir``: a grid of every PNG, each linked, with its counts (an earlier one is
    replaced only once the new one is whole)."""
    esc = html.escape
    legend = "".join(f'<span style="color:rgb{c}">&#9632; {esc(name)}</span> '
                     for c, name in ((GREEN, "matched pred"), (RED, "false-positive pred"),
                                     (ORANGE, "missed GT"), (BLUE, "matched GT / GT"),
                                     (GREY, "ignore region (dashed; crowd / don't care) and predictions on it: "
                                            "neither true nor false positives")))
    cells = []
    for v in views:
        counts = f"GT {v.n_gt}" + (f" &middot; ignore {v.n_ignore}" if v.n_ignore else "")
        if v.n_pred is not None:
            counts += f" &middot; pred {v.n_pred} &middot; TP {v.tp}"
            counts += f" &middot; FP {v.n_pred - (v.tp or 0) - v.on_ignore}"
            counts += f" &middot; on ignore {v.on_ignore}" if v.on_ignore else ""
            counts += f" &middot; FN {v.n_gt - (v.tp or 0)}"
        note = f'<div class="err">parse error: {esc(v.parse_error)}</div>' if v.parse_error else ""
        if v.error:
            body = f'<div class="err">not rendered: {esc(v.error)}</div>'
        else:
            body = f'<a href="{esc(v.png)}"><img src="{esc(v.png)}" loading="lazy"></a>'
        cells.append(f'<figure>{body}<figcaption><b>{esc(v.png or "-")}</b><br>{esc(v.source)}<br>{counts}'
                     f"{note}</figcaption></figure>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: 260px; font-size: 12px; word-break: break-all; }}
figure img {{ max-width: 256px; max-height: 256px; border: 1px solid #ccc; image-rendering: pixelated; }}
.err {{ color: #c00; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{len(views)} records. {legend}</p>
<div class="grid">
{chr(10).join(cells)}
</div></body></html>
"""
    return write_text_then_rename(out_dir / "index.html", page)  # whole or not at all: src/config/atomic.py
