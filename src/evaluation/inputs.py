"""The inputs of `src.eval` and `src.vis`, each recognised by its content, and the check that they pair.

Ground truth: a COCO annotation file (one JSON object with `images` and `annotations`) or a JSONL in the
data contract. Predictions: a COCO results file (one JSON list of `{image_id, category_id, bbox, score}`) or
the prediction JSONL of `src.infer`, whose relative image paths resolve against the prediction file's own
folder (as the ground truth's do against its file).

Nothing that does not pair is let through as a number: `pairing_failure` says why a pair of inputs cannot
be evaluated (no prediction pairs with any ground-truth image, most lines unreadable, COCO results naming
image ids a JSONL ground truth's derived ids do not have), with examples of what did not match and how to
fix it; the entries turn it into exit 2.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from src.datasets.contract import Record
from src.datasets.validation import load_records
from src.evaluation.coco_files import (
    ImageId,
    category_ids,
    coco_ids_for,
    is_coco_annotations,
    is_coco_results,
    jsonl_image_ids,
    read_json_document,
    records_from_coco,
    rows_from_coco_results,
)
from src.evaluation.metrics import pair_predictions
from src.inference.predictions import read_prediction_rows

__all__ = ["GroundTruth", "InputError", "Predictions", "load_ground_truth", "load_predictions", "pairing_failure"]

_EXAMPLES = 3


class InputError(ValueError):
    """An input that cannot be evaluated; the message says which file, what is wrong and how to fix it."""


@dataclass
class GroundTruth:
    """Ground-truth records of either format, with the COCO ids evaluation orders and pairs them by."""

    path: Path
    format: str
    """"coco" or "jsonl"."""
    records: list[Record]
    image_ids: list[ImageId]
    categories: dict
    """category id -> desc (COCO: the file's categories; JSONL: `category_ids` inverted)."""
    problems: list[str] = field(default_factory=list)
    """Records or annotations skipped, one line each."""
    notes: list[str] = field(default_factory=list)
    id_rule: str = "coco"
    """Where `image_ids` come from: "coco" (the COCO file's own), "coco_gt" (a JSONL's images matched by file
    name in the annotation file given as `coco_gt`) or "derived" (a JSONL's file-name numbers or positions,
    `jsonl_image_ids`: only a guess at the ids results were made for)."""


@dataclass
class Predictions:
    """Prediction rows of either format, and what reading them left out."""

    path: Path
    format: str
    """"coco_results" or "jsonl"."""
    rows: list[dict]
    n_items: int
    """Non-blank lines (JSONL) or entries (COCO results) read."""
    bad: list[str] = field(default_factory=list)
    """Lines or entries that could not be read, one message each."""
    notes: list[str] = field(default_factory=list)
    pair_by: str = "path"
    n_paired_items: int | None = None
    """COCO results only: entries that found their image (pairing is by image id, done while reading)."""
    unknown_images: list[str] = field(default_factory=list)
    """COCO results only: the image ids that no ground-truth image has, with their counts (`"7 (2x)"`)."""
    unknown_categories: Counter = field(default_factory=Counter)
    n_unknown_image_items: int = 0
    """COCO results only: entries whose image id no ground-truth image has."""
    shared_images: dict[str, list[str]] = field(default_factory=dict)
    """COCO results only: image ids of results for an image several records hold -> those records."""


def load_ground_truth(path: Path, coco_gt: Path | None = None) -> GroundTruth:
    """Read `path` as a COCO annotation file or a contract JSONL (images not decoded: evaluation needs only
    their paths). A JSONL's image and category ids come from the COCO annotation file `coco_gt` when given
    (`coco_ids_for`: images by file name, categories by name; what `src.infer --coco_gt` writes), else from the
    records (`jsonl_image_ids`, `category_ids`). Raises FileNotFoundError, or InputError when it holds no usable
    record, or `coco_gt` is given for a COCO `path` or does not hold the records' images."""
    document = read_json_document(path)
    if document is not None and is_coco_annotations(document):
        if coco_gt is not None:
            raise InputError(f"--coco_gt {coco_gt}: {path} is a COCO annotation file, whose own image ids results "
                             "pair by; --coco_gt is for a JSONL ground truth: leave it out")
        try:
            coco = records_from_coco(document, path)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if not coco.records:
            raise InputError(f"{path}: a COCO annotation file without images; nothing to evaluate")
        return GroundTruth(path, "coco", coco.records, coco.image_ids, coco.categories, coco.problems, coco.notes)
    if document is not None and is_coco_results(document):
        raise InputError(f"{path}: this is a COCO results list (detections), not ground truth; pass it as --pred and "
                         "give the COCO annotation file or the JSONL as --gt")
    try:
        records, problems = load_records(path, check_image=False)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not records:
        shown = "; ".join(str(p) for p in problems[:_EXAMPLES])
        raise InputError(f"{path}: no valid record (a JSONL in the data contract or a COCO annotation file is "
                         f"expected){': ' + shown if shown else ''}")
    if coco_gt is not None:
        try:
            image_ids, by_desc = coco_ids_for(records, coco_gt)
        except ValueError as exc:
            raise InputError(f"--coco_gt: {exc}") from None
        categories = {cid: desc for desc, cid in by_desc.items()}
        notes = []
        unknown = sorted({o.desc for r in records for o in r.objects if o.desc and o.desc not in by_desc})
        if unknown:
            notes.append(f"{len(unknown)} descs of {path} are no category name of {coco_gt} (no result can match "
                         f"them): {_examples([repr(d) for d in unknown])}")
        return GroundTruth(path, "jsonl", records, image_ids, categories, [str(p) for p in problems], notes,
                           "coco_gt")
    try:
        categories = {cid: desc for desc, cid in category_ids(records).items()}
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return GroundTruth(path, "jsonl", records, jsonl_image_ids(records), categories, [str(p) for p in problems],
                       id_rule="derived")


def _resolve(image: object, base: Path) -> object:
    if isinstance(image, str) and image and not os.path.isabs(image):
        return os.path.normpath(base / image)
    return image


def load_predictions(path: Path, gt: GroundTruth, pair_by: str = "path") -> Predictions:
    """Read `path` as COCO results (paired with `gt` by image id, categories by `gt.categories`) or as a
    prediction JSONL (relative `image` paths resolved against `path`'s folder). A COCO ground truth pairs
    JSONL rows by file name (its images are only names). Raises FileNotFoundError."""
    document = read_json_document(path)
    if document is not None and is_coco_results(document):
        read = rows_from_coco_results(document, path, gt.records, gt.image_ids, gt.categories)
        notes = []
        if read.across_types:
            notes.append(f"{read.across_types} results matched their image only by the id's text (string vs "
                         "integer)")
        if gt.id_rule == "derived":
            notes.append(f"{gt.path} is a JSONL: its image ids are the numbers ending the file names, else the "
                         "positions; results made for a COCO annotation file pair right only with it as --coco_gt")
        return Predictions(path, "coco_results", read.rows, read.n_entries, read.bad_entries, notes, "path",
                           read.n_used,
                           [f"{k} ({n}x)" for k, n in read.unknown_images.most_common()], read.unknown_categories,
                           sum(read.unknown_images.values()), read.shared_images)
    if document is not None and is_coco_annotations(document):
        raise InputError(f"{path}: this is a COCO annotation file (ground truth), not predictions; pass it as --gt, "
                         "and the detections (a COCO results list or src.infer's JSONL) as --pred")
    try:
        rows, bad = read_prediction_rows(path)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    base = path.resolve().parent
    rows = [{**row, "image": _resolve(row.get("image"), base)} for row in rows]
    return Predictions(path, "jsonl", rows, len(rows) + len(bad), bad,
                       pair_by="name" if gt.format == "coco" else pair_by)


def _examples(values: list[str]) -> str:
    shown = ", ".join(values[:_EXAMPLES])
    return shown + (f" (and {len(values) - _EXAMPLES} more)" if len(values) > _EXAMPLES else "")


def pairing_failure(preds: Predictions, gt: GroundTruth) -> str | None:
    """Why `preds` cannot be evaluated against `gt` (None when they can): most lines or entries unreadable,
    no detection at all, no prediction for any ground-truth image, COCO results for an image that several
    records hold, COCO results naming an image id that a JSONL ground truth's derived ids
    (`GroundTruth.id_rule`) lack (the ids are a guess, so any miss may mean every result is on the wrong
    image), or no known category. The message names the files, counts, examples of what did not match, and
    how to fix it."""
    if preds.n_items == 0:
        return (f"{preds.path}: no predictions in the file (empty); nothing to evaluate"
                + ("; a COCO results list cannot say which images were answered without detections: evaluate "
                   "src.infer's prediction JSONL instead" if preds.format == "coco_results" else ""))
    if len(preds.bad) * 2 > preds.n_items:
        what = "entries" if preds.format == "coco_results" else "lines"
        return (f"{preds.path}: {len(preds.bad)} of {preds.n_items} {what} cannot be read, e.g. "
                + "; ".join(preds.bad[:_EXAMPLES])
                + ". Expected src.infer's prediction JSONL (one object per line with image and objects) or a COCO "
                  "results list ([{image_id, category_id, bbox, score}, ...])")
    gt_images = [r.image for r in gt.records]
    if preds.format == "coco_results":
        if preds.shared_images:
            shown = [f"image id {k}: records {', '.join(v)}" for k, v in preds.shared_images.items()]
            return (f"{preds.path}: results name {len(shown)} images that several records of {gt.path} hold "
                    f"({_examples(shown)}); a COCO result names an image, not a record, so it cannot be scored "
                    "against one of them. Merge each image's records into one (their objects together), or evaluate "
                    "src.infer's prediction JSONL, which pairs by record")
        if not preds.n_paired_items:
            return (f"{preds.path}: none of the {preds.n_items} results names an image id of {gt.path}: result image "
                    f"ids {_examples(preds.unknown_images)}; ground-truth image ids "
                    f"{_examples([repr(i) for i in gt.image_ids])}. "
                    + ("A JSONL ground truth gives each image the number that ends its file name (else its position "
                       "in the file); pass the COCO annotation file the results were made for as --coco_gt (or as "
                       "--gt)" if gt.id_rule == "derived" else "Pass the annotation file the results were made for"))
        if preds.n_unknown_image_items and gt.id_rule == "derived":
            named = [f"{i!r} = {os.path.basename(r.image)}" for i, r in zip(gt.image_ids, gt.records, strict=True)]
            return (f"{preds.path}: {preds.n_unknown_image_items} of its {preds.n_items} results name image ids that "
                    f"{gt.path} does not have: {_examples(preds.unknown_images)}. A JSONL ground truth holds no COCO "
                    f"image ids: each image got the number ending its file name, else its position "
                    f"({_examples(list(dict.fromkeys(named)))}), so results made for other ids would be scored "
                    "against the wrong images. Pass the COCO annotation file the results were made for as "
                    "--coco_gt (images matched by file name), or as --gt")
        used = preds.n_paired_items - sum(preds.unknown_categories.values())
        if used == 0:
            return (f"{preds.path}: no result has a category id of {gt.path}: result category ids "
                    f"{_examples([f'{k} ({n}x)' for k, n in preds.unknown_categories.most_common()])}; ground-truth "
                    f"category ids {_examples([f'{k} = {v!r}' for k, v in gt.categories.items()])}")
        return None
    if preds.pair_by == "name":
        twice = [n for n, k in Counter(os.path.basename(i) for i in dict.fromkeys(gt_images)).items() if k > 1]
        if twice:
            return (f"{gt.path}: {len(twice)} file names belong to several images ({_examples(twice)}), so predictions "
                    "cannot pair by file name; pair by path (write the predictions with the ground truth's paths)")
    paired, unpaired = pair_predictions(preds.rows, gt.records, preds.pair_by)
    if any(row is not None for row in paired):
        return None
    unknown = unpaired["unknown_images"]
    looks_like_gt = sum(1 for row in preds.rows if "images" in row and "objects" in row)
    hint = []
    if looks_like_gt * 2 > len(preds.rows):
        hint.append(f"{preds.path} looks like a ground-truth JSONL (its lines have 'images'), not src.infer's "
                    "predictions")
    elif not preds.rows:
        hint.append("no line is a prediction")
    else:
        names = {os.path.basename(i) for i in gt_images}
        same_name = sum(1 for i in unknown if os.path.basename(i) in names)
        if same_name and preds.pair_by == "path":
            hint.append(f"{same_name} of them have a ground-truth image of the same file name in another folder: "
                        "pass --pair_by name to pair by file name, or write the predictions with the ground truth's "
                        "paths")
        hint.append("relative image paths in the predictions are read against the prediction file's folder "
                    f"({preds.path.resolve().parent})")
    return (f"{preds.path}: none of its {len(preds.rows)} prediction lines pairs with a record of {gt.path} "
            f"(pairing by image {'file name' if preds.pair_by == 'name' else 'path'}): prediction images "
            f"{_examples(unknown)}; ground-truth images {_examples(gt_images)}. " + "; ".join(hint))
