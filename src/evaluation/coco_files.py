"""COCO files in and out of the evaluation: annotation files as ground truth, results files as predictions.

* A COCO annotation file (`{"images", "annotations", "categories"}`) becomes one `Record` per image,
  ordered by image id as COCOeval orders them (so that score ties across images rank alike); a bbox
  becomes `bbox_2d` `[x, y, x + w, y + h]`, the category's `name` the `desc`, `iscrowd: 1` an ignore
  region.
* A COCO results file (a list of `{image_id, category_id, bbox: [x, y, w, h], score}`) becomes one
  prediction row per ground-truth image, the image's detections in file order; an image without
  detections gets an empty row (the format cannot say "nothing found" otherwise). A result with w < 0 or
  h < 0 is a bad entry, left out: pycocotools leaves out one with one negative side too (its negative
  area is outside every area range) but counts one with both negative (a positive area) as a false
  positive that matches nothing; here that one is left out as well. Results for an image
  that several records of a JSONL hold are not used and listed (`CocoResults.shared_images`): a result
  names an image, not a record; `src.eval` refuses them.
* Prediction lines become COCO results (`coco_results`), a quad as its bounding box.

Against a JSONL ground truth, image ids and category ids come from the records (`jsonl_image_ids`,
`category_ids`): the same rule for `src.infer --coco_results` and for `src.eval` reading such a file.
Every entry that cannot be used is counted and described, never dropped silently.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.config.atomic import write_text_then_rename
from src.datasets import kinds as geometry_kinds
from src.datasets.contract import GroundingObject, Record, SourceRef
from src.datasets.convert_coco import category_descs
from src.inference.predictions import PredictionLine

__all__ = [
    "CocoGroundTruth",
    "CocoResults",
    "category_ids",
    "coco_ids_for",
    "coco_results",
    "coco_sort_key",
    "is_coco_annotations",
    "is_coco_results",
    "jsonl_image_ids",
    "read_json_document",
    "records_from_coco",
    "rows_from_coco_results",
    "write_coco_results",
]

ImageId = int | str
_EXAMPLES = 5


def _is_id(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: object) -> str:
    """An id as written in JSON: a string keeps its quotes, so `'2299'` and `2299` differ on screen."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def coco_sort_key(image_id: ImageId) -> tuple[int, int | str]:
    """The order COCOeval evaluates images in (`sorted(image ids)`): numbers by value, strings as text.
    (pycocotools cannot sort ids of mixed types; here numbers come first.)"""
    return (0, image_id) if isinstance(image_id, int) else (1, image_id)


# ---------------------------------------------------------------------------- recognising files


def read_json_document(path: Path) -> Any | None:
    """The file's content when it is one JSON value (a COCO file, on one line or pretty-printed in any layout),
    else None (a JSONL file: several values, or a first line that is not JSON and a whole file that is not one
    value either; its lines then report their own errors). Raises FileNotFoundError."""
    with path.open("rb") as fh:
        first = fh.readline()
        while first and not first.strip():
            first = fh.readline()
        try:
            value = json.loads(first)
        except (json.JSONDecodeError, UnicodeDecodeError):
            value = None
        else:
            rest = fh.read(1 << 16)
            if rest.strip():  # a second value: JSONL (or a COCO file followed by junk: JSONL errors tell)
                return None
            if fh.read(1):  # more than 64 KiB of whitespace: read it all to be sure
                return None if (rest + fh.read()).strip() else value
            return value
    # A value spread over lines (pretty-printed, or `{"images": [...],` then more): the whole file is one.
    if not first.removeprefix(b"\xef\xbb\xbf").lstrip().startswith((b"{", b"[")):
        return None
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_coco_annotations(value: Any) -> bool:
    """A COCO annotation file: an object with `images` and `annotations` lists."""
    return (isinstance(value, dict) and isinstance(value.get("images"), list)
            and isinstance(value.get("annotations"), list))


def is_coco_results(value: Any) -> bool:
    """A COCO results file: a list (possibly empty) of objects."""
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


# ---------------------------------------------------------------------------- COCO ground truth


@dataclass
class CocoGroundTruth:
    """The records of a COCO annotation file, and what was not used."""

    records: list[Record]
    """One per image, in COCOeval's order (sorted image ids)."""
    image_ids: list[ImageId]
    """The COCO id of each record."""
    categories: dict[ImageId, str]
    """category id -> the desc it became (its name; made unique when two categories share one)."""
    problems: list[str] = field(default_factory=list)
    """Annotations and images that could not be used, one line each."""
    notes: list[str] = field(default_factory=list)
    """Things done that bend nothing but deserve a word (ids matched across types)."""


def _category_descs(path: Path, categories: list, problems: list[str], notes: list[str]) -> dict[ImageId, str]:
    names: dict[ImageId, object] = {}
    first: dict[ImageId, int] = {}
    for position, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")):
            problems.append(f"{path}: categories[{position}]: needs an integer or string id, got {cat!r:.80}")
            continue
        if cat["id"] in names and names[cat["id"]] != cat.get("name"):
            # pycocotools keeps the later one too, but says nothing: every annotation of the id gets this name.
            notes.append(f"{path}: categories[{position}]: id {_show(cat['id'])} is used by "
                            f"categories[{first[cat['id']]}] ({names[cat['id']]!r:.40}) too; its annotations are "
                            f"evaluated as {cat.get('name')!r:.40}, the later one, as pycocotools reads it")
        first.setdefault(cat["id"], position)
        names[cat["id"]] = cat.get("name")
    # convert_coco's rule: two categories with one name stay two categories (per-desc AP must not merge them).
    return category_descs(names)


def _size(value: object) -> int:
    return int(value) if _finite(value) and float(value).is_integer() and value > 0 else 0


def records_from_coco(coco: dict, path: Path) -> CocoGroundTruth:
    """The records of a COCO annotation file already read (`coco`) from `path` (see the module docstring).

    Image paths are `file_name` under `path`'s folder; `Record.source` is `path` and the image's position
    (1-based) in `images`. An annotation whose `image_id` matches an image only as text (`2299` for image
    `"2299"`) is kept with a note; an annotation for no image, or with a `bbox` that is not 4 finite numbers
    with w, h >= 0, is reported in `problems`. Raises ValueError when two images share an id.
    """
    problems: list[str] = []
    notes: list[str] = []
    descs = _category_descs(path, coco.get("categories") or [], problems, notes)
    images: dict[ImageId, tuple[int, dict]] = {}
    for position, image in enumerate(coco["images"], start=1):
        if not isinstance(image, dict) or not _is_id(image.get("id")):
            problems.append(f"{path}: images[{position - 1}]: needs an integer or string id, got {image!r:.80}")
            continue
        if image["id"] in images:
            raise ValueError(f"{path}: images[{position - 1}]: id {_show(image['id'])} is used by an earlier image "
                             "too; image ids must be unique")
        images[image["id"]] = (position, image)
    by_text: dict[str, ImageId] = {}
    for image_id in images:
        by_text.setdefault(str(image_id), image_id)
    objects: dict[ImageId, list[GroundingObject]] = {image_id: [] for image_id in images}
    across_types: Counter = Counter()
    unknown_images: Counter = Counter()
    for position, ann in enumerate(coco["annotations"]):
        where = f"{path}: annotations[{position}]" + (f" (id {_show(ann.get('id'))})" if isinstance(ann, dict) else "")
        if not isinstance(ann, dict):
            problems.append(f"{where}: not an object")
            continue
        image_id = ann.get("image_id")
        if not (_is_id(image_id) and image_id in images):
            match = by_text.get(str(image_id)) if _is_id(image_id) else None
            if match is None:
                unknown_images[_show(image_id)] += 1
                continue
            across_types[f"{_show(image_id)} for image {_show(match)}"] += 1
            image_id = match
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)
                and bbox[2] >= 0 and bbox[3] >= 0):
            problems.append(f"{where}: bbox must be [x, y, w, h], 4 finite numbers with w, h >= 0, got {bbox!r:.80}")
            continue
        category = ann.get("category_id")
        if category not in descs:
            descs[category] = f"category_id {category}"
            notes.append(f"{where}: category_id {_show(category)} is not in categories; evaluated as "
                         f"{descs[category]!r}")
        x, y, w, h = (float(v) for v in bbox)
        objects[image_id].append(GroundingObject(
            kind="bbox_2d", points=(x, y, x + w, y + h), desc=descs[category], ignore=bool(ann.get("iscrowd")),
            category_id=category if isinstance(category, int) and not isinstance(category, bool) else None))
    if unknown_images:
        problems.append(f"{path}: {sum(unknown_images.values())} annotations name an image id that no image has: "
                        + ", ".join(f"{k} ({n}x)" for k, n in unknown_images.most_common(_EXAMPLES)))
    if across_types:
        notes.append(f"{path}: {sum(across_types.values())} annotations matched their image only by the id's text "
                     "(string vs integer): " + ", ".join(across_types)[:300])
    order = sorted(images, key=coco_sort_key)
    records = []
    for image_id in order:
        position, image = images[image_id]
        name = image.get("file_name")
        image_path = os.path.normpath(path.parent / name) if isinstance(name, str) and name else f"image id {image_id}"
        records.append(Record(image=image_path, width=_size(image.get("width")), height=_size(image.get("height")),
                              objects=tuple(objects[image_id]), source=SourceRef(file=str(path), line=position)))
    return CocoGroundTruth(records, order, {k: v for k, v in descs.items()}, problems, notes)


# ---------------------------------------------------------------------------- ids of a JSONL ground truth


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def jsonl_image_ids(records: Sequence[Record]) -> list[ImageId]:
    """A COCO image id per record: the number that ends the image's file name (`COCO_val2014_000000001146.jpg`
    -> 1146, COCO's own naming) when every image has one and distinct images get distinct numbers; else the
    1-based position of the image's first record. Records of one image share its id."""
    images = list(dict.fromkeys(os.path.normpath(r.image) for r in records))
    numbers = {}
    for image in images:
        found = _TRAILING_NUMBER.search(Path(image).stem)
        if found is None:
            break
        numbers[image] = int(found.group(1))
    if len(numbers) != len(images) or len(set(numbers.values())) != len(images):
        numbers = {image: position for position, image in enumerate(images, start=1)}
    return [numbers[os.path.normpath(r.image)] for r in records]


def category_ids(records: Iterable[Record]) -> dict[str, int]:
    """desc -> COCO category id for the descs of `records`: the `category_id` the objects carry, and for the
    descs without one, the next free ids in sorted order of the descs. Raises ValueError when one desc
    carries two ids or two descs one id (the file says where)."""
    given: dict[str, int] = {}
    where: dict[str, str] = {}
    descs: set[str] = set()
    for record in records:
        for obj in record.objects:
            if not obj.desc:
                continue
            descs.add(obj.desc)
            cid = obj.category_id
            if cid is None:
                continue
            if given.setdefault(obj.desc, cid) != cid:
                raise ValueError(f"{record.source}: desc {obj.desc!r} has category_id {cid} here but "
                                 f"{given[obj.desc]} at {where[obj.desc]}; one desc needs one category id")
            where.setdefault(obj.desc, str(record.source))
    owners: dict[int, str] = {}
    for desc, cid in given.items():
        if owners.setdefault(cid, desc) != desc:
            raise ValueError(f"category_id {cid} is given to two descs, {owners[cid]!r} ({where[owners[cid]]}) and "
                             f"{desc!r} ({where[desc]}); one category id needs one desc")
    next_id = max(given.values(), default=0) + 1
    out = dict(given)
    for desc in sorted(descs - set(given)):
        out[desc] = next_id
        next_id += 1
    return out


# ---------------------------------------------------------------------------- COCO results in


@dataclass
class CocoResults:
    """Prediction rows made from a COCO results file, and what could not be used."""

    rows: list[dict]
    """One per ground-truth record, empty for a record without detections."""
    n_entries: int
    n_used: int
    bad_entries: list[str] = field(default_factory=list)
    """Entries that are not a detection (missing or wrong keys), one line each."""
    unknown_images: Counter = field(default_factory=Counter)
    """image ids (as shown) of entries for no ground-truth image, with their counts."""
    unknown_categories: Counter = field(default_factory=Counter)
    """category ids of entries whose category the ground truth does not know (kept under a made-up desc)."""
    across_types: int = 0
    """Entries whose image id matched only as text (`"2299"` for image 2299)."""
    shared_images: dict[str, list[str]] = field(default_factory=dict)
    """Image ids (as shown) of entries for an image that several records hold -> those records' sources; such
    entries are not used (a result names an image, not a record, so it cannot be given to one of them)."""


def rows_from_coco_results(entries: list, path: Path, records: Sequence[Record], image_ids: Sequence[ImageId],
                           descs: dict[Any, str]) -> CocoResults:
    """Prediction rows for `records` (whose COCO ids are `image_ids`) from COCO results `entries` read from
    `path`; `descs` maps category id -> desc. See the module docstring."""
    index: dict[ImageId, list[int]] = {}
    for i, image_id in enumerate(image_ids):
        index.setdefault(image_id, []).append(i)
    by_text: dict[str, ImageId] = {}
    for image_id in index:
        by_text.setdefault(str(image_id), image_id)
    objects: list[list[dict]] = [[] for _ in records]
    out = CocoResults([], len(entries), 0)
    for position, entry in enumerate(entries):
        where = f"{path}: entry {position}"
        if not isinstance(entry, dict):
            out.bad_entries.append(f"{where}: not an object")
            continue
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in entry]
        if missing:
            hint = " (segmentation results are not evaluated: give bbox)" if "segmentation" in entry else ""
            out.bad_entries.append(f"{where}: missing {', '.join(missing)}; a COCO detection result needs image_id, "
                                   f"category_id, bbox [x, y, w, h] and score{hint}")
            continue
        bbox, score, image_id = entry["bbox"], entry["score"], entry["image_id"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            out.bad_entries.append(f"{where}: bbox must be [x, y, w, h], 4 finite numbers, got {bbox!r:.80}")
            continue
        if bbox[2] < 0 or bbox[3] < 0:
            out.bad_entries.append(f"{where}: bbox [x, y, w, h] needs w, h >= 0, got {bbox!r:.80}")
            continue
        if not _finite(score):
            out.bad_entries.append(f"{where}: score must be a finite number, got {score!r:.40}")
            continue
        if not _is_id(image_id):
            out.bad_entries.append(f"{where}: image_id must be an integer or a string, got {image_id!r:.40}")
            continue
        if image_id not in index:
            match = by_text.get(str(image_id))
            if match is None:
                out.unknown_images[_show(image_id)] += 1
                continue
            out.across_types += 1
            image_id = match
        category = entry["category_id"]
        desc = descs.get(category) if _is_id(category) else None
        if desc is None:
            out.unknown_categories[_show(category)] += 1
            desc = f"category_id {category}"
        x, y, w, h = (float(v) for v in bbox)
        if len(index[image_id]) > 1:
            out.shared_images.setdefault(_show(image_id), [str(records[i].source) for i in index[image_id]])
            continue
        objects[index[image_id][0]].append({"kind": "bbox_2d", "points": [x, y, x + w, y + h], "desc": desc,
                                            "score": float(score)})
        out.n_used += 1
    out.rows = [{"source": str(rec.source), "image": rec.image, "width": rec.width, "height": rec.height,
                 "raw": "", "parse_error": None, "objects": objs} for rec, objs in zip(records, objects, strict=True)]
    return out


# ---------------------------------------------------------------------------- COCO results out


def coco_results(lines: Iterable[PredictionLine], image_ids: Sequence[ImageId],
                 categories: dict[str, int]) -> tuple[list[dict], Counter]:
    """COCO results for prediction `lines` (the i-th line's image has id `image_ids[i]`; `categories` maps
    desc -> category id): `{image_id, category_id, bbox: [x, y, w, h], score}` per object, in line order.

    Returns the list and counts of what it changed or left out: `quad as bbox` (a quad written as its
    bounding box: COCO detections are boxes; likewise `polygon as bbox`, and `point_2d as bbox`, a box of
    no size), `desc not in categories` (left out: no id to give it)."""
    results, counts = [], Counter()
    for line, image_id in zip(lines, image_ids, strict=True):
        for obj in line.objects:
            cid = categories.get(obj.desc)
            if cid is None:
                counts["desc not in categories"] += 1
                continue
            kind = geometry_kinds.get(obj.kind)
            if not kind.axis_aligned:  # COCO detections are boxes: any other kind as its bounding box
                counts[f"{obj.kind} as bbox"] += 1
            x1, y1, x2, y2 = (float(v) for v in kind.xyxy([obj.points])[0])
            results.append({"image_id": image_id, "category_id": cid,
                            "bbox": [x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1)], "score": obj.score})
    return results, counts


def coco_ids_for(records: Sequence[Record], coco_gt: Path | None = None) -> tuple[list[ImageId], dict[str, int]]:
    """The image id of each record and desc -> category id, for writing the records' predictions as COCO
    results: from the COCO annotation file `coco_gt` (images by file name, categories by name) or, without
    one, by the rule a JSONL ground truth is read with (`jsonl_image_ids`, `category_ids`), so that
    `src.eval` pairs them back. Raises ValueError naming what does not map; FileNotFoundError."""
    if coco_gt is None:
        return jsonl_image_ids(records), category_ids(records)
    document = read_json_document(coco_gt)
    if not is_coco_annotations(document):
        raise ValueError(f"{coco_gt}: not a COCO annotation file (a JSON object with images and annotations)")
    coco = records_from_coco(document, coco_gt)
    by_name: dict[str, list[ImageId]] = {}
    for record, image_id in zip(coco.records, coco.image_ids, strict=True):
        by_name.setdefault(os.path.basename(record.image), []).append(image_id)
    ids, unknown, ambiguous = [], [], []
    for record in records:
        found = by_name.get(os.path.basename(record.image), [])
        if len(found) != 1:
            (ambiguous if found else unknown).append(os.path.basename(record.image))
        ids.append(found[0] if found else None)
    if unknown or ambiguous:
        raise ValueError(f"{coco_gt}: {len(unknown)} images of the records are not in its images"
                         + (f" (e.g. {', '.join(unknown[:_EXAMPLES])})" if unknown else "")
                         + (f", {len(ambiguous)} file names belong to several of its images (e.g. "
                            f"{', '.join(ambiguous[:_EXAMPLES])})" if ambiguous else "")
                         + "; give the annotation file the records were converted from, or leave --coco_gt out "
                           "(ids from the records' file names)")
    return ids, {desc: cid for cid, desc in coco.categories.items() if isinstance(cid, int)}


def write_coco_results(results: list[dict], path: Path) -> Path:
    """Write COCO `results` as one JSON list to `path` (its folder created; whole or not at all:
    src/config/atomic.py); return `path`."""
    return write_text_then_rename(path, json.dumps(results, ensure_ascii=False) + "\n")
