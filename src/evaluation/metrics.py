"""Evaluation metrics (`python -m src.eval` runs them): predictions against ground truth.

Predictions (the JSONL written by `python -m src.infer`, see src/inference/predictions.py) are
matched to ground-truth records by image path. Reported: COCO-style AP@[.5:.95], AP50 and AP75,
class-agnostic (every description one class) and per description (category = ``desc`` in its NFC form,
`desc_key`); precision, recall and F1 at IoU 0.5; the parse-failure rate. AP is pycocotools' own COCOeval
(every area: not its "all", which ends at 1e10 px^2; maxDets=100) with its IoU replaced
(src/evaluation/coco_ap.py) by the geometry registry's similarity (src/datasets/kinds/): box IoU for box
pairs, polygon IoU (shapely) for any other pair of regions (quads, polygons), and for points the point rules
(a point in a region matches it; two points by their distance relative to the image size, 1 - d / 0.1 image
sizes, so IoU 0.5 means within 5% of it). Images are evaluated in the order of their COCO image id
(`image_ids`), as COCOeval does, which decides how score ties across images rank.

Ground-truth objects marked ``ignore`` (crowd, illegible text, don't care) are COCO's crowd
regions: a prediction matched to one (only when no other object is free to match it; IoU =
intersection over the prediction's own area) is neither a true nor a false positive, any number
of predictions may match it, and it is never a miss. An ignore region without a desc applies to
every desc.

Everything that bends the numbers is reported, not hidden: GT records without a prediction line
(counted as parse failures with no objects), prediction lines for unknown images, objects without
a score (scored 1.0), malformed predicted objects (dropped), images with more than maxDets objects.
"""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from src.datasets import kinds as geometry_kinds
from src.datasets.contract import Record
from src.datasets.geometry import is_finite_number
from src.datasets.objects import GeoObject, read_objects, values_fit
from src.evaluation.coco_ap import ap_summary, coco_precision
from src.evaluation.coco_files import coco_sort_key, jsonl_image_ids

__all__ = [
    "IOU_TYPES",
    "PAIR_BY",
    "ImagePair",
    "Obj",
    "Prediction",
    "evaluate",
    "evaluate_images",
    "desc_key",
    "format_table",
    "gt_objects",
    "match_greedy",
    "pair_predictions",
    "pairwise_iou",
    "polygon_iou",
    "prediction_objects",
]

MAX_DETS = 100
IOU_TYPES = geometry_kinds.SIMILARITY_MODES
_QUAD = "quad"  # polygon_iou compares quads


# The object record (src/datasets/objects.py) in pixels, used for both sides of the matching: a prediction's
# score, 1.0 for ground truth.
Obj = GeoObject


class Prediction(Protocol):
    """A prediction line as read by the evaluation: `src.inference.predictions.PredictionLine` is one, so the
    evaluation during training hands its lines over as they are. A JSON row (a dict, as the prediction JSONL or
    COCO results give it) is read as one by `prediction_objects`."""

    source: str
    image: str | None
    parse_error: str | None
    objects: list[GeoObject]
    invalid_objects: int
    scores_missing: int


def _field(row: dict | Prediction, name: str) -> Any:
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


# ---------------------------------------------------------------------------- IoU


def polygon_iou(quads_a: np.ndarray, quads_b: np.ndarray, crowd: Sequence[bool] | None = None) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of 4-vertex polygons ``(N, 8)`` and ``(M, 8)`` by exact polygon clipping.

    Self-crossing (bow-tie) polygons are repaired with ``shapely.make_valid`` so they count with
    their geometric area; a pair whose union is 0 gets IoU 0. For a column ``j`` with ``crowd[j]``
    the union is the area of ``a``'s polygon alone (COCO's IoU against a crowd region).
    (The geometry registry's `pairwise_similarity` in polygon mode, for quads.)
    """
    a, b = np.asarray(quads_a, dtype=np.float64).reshape(-1, 8), np.asarray(quads_b, dtype=np.float64).reshape(-1, 8)
    return geometry_kinds.pairwise_similarity([_QUAD] * len(a), a.tolist(), [_QUAD] * len(b), b.tolist(),
                                              crowd=crowd, mode="polygon")


def pairwise_iou(dets: Sequence[Obj], gts: Sequence[Obj], iou_type: str = "auto",
                 crowd: Sequence[bool] | None = None, size: tuple[float, float] | None = None) -> np.ndarray:
    """IoU ``(len(dets), len(gts))`` between predicted and GT objects: the geometry registry's
    `src.datasets.kinds.pairwise_similarity` (its rules for every pair of kinds).

    ``auto``: box IoU for box/box pairs (the same formula as COCO's bbox IoU), polygon IoU for
    any other pair of regions (a box taken as its 4-corner polygon). ``bbox``: every region as
    its axis-aligned bounding box. ``polygon``: every region as a polygon. A point against a region
    is 1 inside it (edge included), else 0; two points score by their distance relative to ``size``
    (``(width, height)`` of the space the points are in; needed only then). ``crowd`` flags GT
    objects that are ignore (crowd) regions: against them IoU is the intersection over the
    prediction's own area, as COCOeval computes it for ``iscrowd`` regions.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    return geometry_kinds.pairwise_similarity([o.kind for o in dets], [o.points for o in dets],
                                              [o.kind for o in gts], [o.points for o in gts], size=size,
                                              crowd=crowd, mode=iou_type)


# ---------------------------------------------------------------------------- labels


def desc_key(desc: str) -> str:
    """A description as labels are compared: its NFC form, so canonically equivalent spellings are one label.
    Qwen's tokenizer normalises what it encodes to NFC, so a model trained on an NFD desc answers in NFC.
    Case and spacing are kept: they make other text."""
    return desc if unicodedata.is_normalized("NFC", desc) else unicodedata.normalize("NFC", desc)


def _keyed(objects: Sequence[Obj]) -> list[Obj]:
    return [o if desc_key(o.desc) == o.desc else dataclasses.replace(o, desc=desc_key(o.desc)) for o in objects]


# ---------------------------------------------------------------------------- matching and AP


def match_greedy(ious: np.ndarray, scores: np.ndarray, iou_thr: float = 0.5,
                 ignore: Sequence[bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """COCO's greedy matching at one IoU threshold; returns ``(det_to_gt, gt_to_det)`` index arrays.

    Detections are visited by descending score (stable: ties keep input order); each takes the
    still-unmatched GT with the highest IoU >= ``iou_thr`` (ties: the later GT, as COCOeval
    does). With ``ignore`` (COCO's crowd regions), a detection that finds no ordinary GT takes the
    ignore region with the highest IoU >= ``iou_thr``, which stays free for others: the caller
    counts such a detection as neither true nor false positive. ``-1`` means unmatched;
    ``gt_to_det`` of an ignore region holds its first detection. Indices refer to the input order.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[0] != len(scores):
        raise ValueError(f"ious must be (len(scores), n_gt), got {ious.shape} for {len(scores)} scores")
    n_det, n_gt = ious.shape
    crowd = np.zeros(n_gt, dtype=bool) if ignore is None else np.asarray(ignore, dtype=bool)
    det_to_gt = np.full(n_det, -1, dtype=np.int64)
    gt_to_det = np.full(n_gt, -1, dtype=np.int64)
    # COCOeval starts from min(t, 1 - 1e-10) so that a threshold of 1.0 can still be met.
    thr = min(float(iou_thr), 1 - 1e-10)
    for d in np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort"):
        if n_gt == 0:
            break
        # Ordinary GT first (COCOeval sorts ignored GT last and stops at them once it has a match).
        for candidates in (~crowd & (gt_to_det < 0), crowd):
            vals = np.where(candidates, ious[d], -np.inf)
            best = vals.max()
            if best >= thr:
                g = n_gt - 1 - int(np.argmax(vals[::-1] == best))  # the last GT reaching the best IoU
                det_to_gt[d] = g
                if gt_to_det[g] < 0:
                    gt_to_det[g] = d
                break
    return det_to_gt, gt_to_det


def _prf(tp: int, n_pred: int, n_gt: int) -> dict[str, float | int | None]:
    precision = tp / n_pred if n_pred else None
    recall = tp / n_gt if n_gt else None
    f1 = (2 * precision * recall / (precision + recall) if precision and recall else
          (0.0 if precision is not None and recall is not None else None))
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": n_pred - tp, "fn": n_gt - tp}


# ---------------------------------------------------------------------------- inputs


PAIR_BY = ("path", "name")


def _norm_path(path: str) -> str:
    return os.path.normpath(path)


def _pair_key(path: str, pair_by: str) -> str:
    return os.path.basename(path) if pair_by == "name" else _norm_path(path)


def pair_predictions(pred_rows: Sequence[dict | Prediction], gt_records: Sequence[Record],
                     pair_by: str = "path") -> tuple[list[dict | Prediction | None], dict]:
    """The prediction row of each GT record (``None`` when it has none), and what did not pair.

    Rows pair with records by normalised image path (``pair_by="name"``: by file name alone);
    when several records share an image, a row whose ``source`` (``file:line``) names one of them pairs with
    that record only (its first such row; a repeat is a duplicate, never another record's row), and the rows
    naming none of them then take the records still free, in order. The second value lists
    ``unknown_images`` (rows for images not in the GT) and ``duplicates`` (rows left over for an image);
    both kinds are not used.
    """
    if pair_by not in PAIR_BY:
        raise ValueError(f"pair_by must be one of {PAIR_BY}, got {pair_by!r}")
    by_image: dict[str, list[int]] = {}
    for i, rec in enumerate(gt_records):
        by_image.setdefault(_pair_key(rec.image, pair_by), []).append(i)
    paired: list[dict | Prediction | None] = [None] * len(gt_records)
    unknown: list[str] = []
    # The rows left to place after their own records, in input order: (row index, candidate records).
    left: list[tuple[int, list[int]]] = []
    extra: set[int] = set()
    for n, row in enumerate(pred_rows):
        image = _field(row, "image")
        candidates = by_image.get(_pair_key(image, pair_by)) if isinstance(image, str) else None
        if not candidates:
            unknown.append(str(image))
            continue
        source = _field(row, "source")
        own = [i for i in candidates if source == str(gt_records[i].source)] if len(candidates) > 1 else []
        if own:
            if paired[own[0]] is None:
                paired[own[0]] = row
            else:
                extra.add(n)
        else:
            left.append((n, candidates))
    for n, candidates in left:
        free = [i for i in candidates if paired[i] is None]
        if free:
            paired[free[0]] = pred_rows[n]
        else:
            extra.add(n)
    duplicates = [str(_field(pred_rows[n], "image")) for n in sorted(extra)]
    return paired, {"unknown_images": unknown, "duplicates": duplicates}


def prediction_objects(row: dict | Prediction | None) -> tuple[list[Obj], int, int]:
    """A prediction row's usable objects, and counts of (malformed objects dropped, scores missing).

    A JSON row's objects are read by `src.datasets.objects.read_objects` (the prediction record's rules: a
    registered `kind` with its count of finite `points`; a missing or non-numeric `score` becomes 1.0 and is
    counted); a typed line (`Prediction`) gives its own objects and counts, held to the same rules: an object
    its JSON form would drop (a non-finite value) is dropped and counted, a non-finite score (a diverged model's
    log-probabilities) becomes 1.0 and is counted, so the line scores as it does once written and read back.
    """
    if row is None:
        return [], 0, 0
    if isinstance(row, dict):
        return read_objects(row.get("objects"))
    usable = [o for o in row.objects if values_fit(o.kind, o.points)]
    unscored = sum(not is_finite_number(o.score) for o in usable)
    if unscored:
        usable = [o if is_finite_number(o.score) else dataclasses.replace(o, score=1.0) for o in usable]
    return usable, row.invalid_objects + len(row.objects) - len(usable), row.scores_missing + unscored


def gt_objects(record: Record) -> tuple[list[Obj], np.ndarray]:
    """A record's GT objects as they are (object records, score 1.0), and which of them are ignore regions."""
    return list(record.objects), np.array([o.ignore for o in record.objects], dtype=bool)


@dataclass(frozen=True, slots=True)
class ImagePair:
    """One evaluated image: its predicted objects against its ground truth (`evaluate_images`' input)."""

    source: str
    """Where the ground truth came from (a record's file:line), as `per_record` reports it."""
    image: str
    dets: Sequence[Obj]
    gts: Sequence[Obj]
    ignore: np.ndarray
    """Which of `gts` are ignore regions (bool per GT object)."""
    parse_error: str | None = None
    invalid: int = 0
    """Predicted objects dropped as malformed."""
    no_score: int = 0
    """Predicted objects that came without a score (scored 1.0)."""
    size: tuple[float, float] | None = None
    """``(width, height)`` of the space the objects are in (points are compared relative to it)."""
    missing: bool = False
    """True when no prediction line paired with the record."""


@dataclass(frozen=True, slots=True)
class _Ref:
    """An object of one evaluated image, by position: its IoUs are looked up, not computed again."""

    image: int
    index: int
    obj: Obj
    ignore: bool = False


def _xyxy(ref: _Ref) -> np.ndarray:
    return geometry_kinds.get(ref.obj.kind).xyxy(np.asarray([ref.obj.points], dtype=np.float64))[0]


def _score(ref: _Ref) -> float:
    return ref.obj.score


def _match_counts(ious: np.ndarray, scores: np.ndarray, ignore: np.ndarray) -> tuple[int, int]:
    """(true positives, predictions on ignore regions) at IoU 0.5."""
    det_to_gt, _ = match_greedy(ious, scores, 0.5, ignore)
    matched = det_to_gt >= 0
    on_ignore = matched & ignore[np.maximum(det_to_gt, 0)] if len(ignore) else np.zeros(len(det_to_gt), bool)
    return int((matched & ~on_ignore).sum()), int(on_ignore.sum())


# ---------------------------------------------------------------------------- evaluation


def evaluate(pred_rows: Sequence[dict | Prediction], gt_records: Sequence[Record], iou_type: str = "auto",
             max_dets: int = MAX_DETS, track: Callable[[Iterable], Iterable] | None = None, *,
             image_ids: Sequence[int | str] | None = None, pair_by: str = "path") -> dict:
    """All metrics for predictions (JSON rows, or typed lines: `Prediction`) against GT records, as a JSON-ready
    dict (pure: no I/O).

    Keys: ``n_records``, ``parse_failures`` / ``parse_failure_rate`` (a record fails when its row
    has a ``parse_error`` or it has no row), ``missing_predictions`` (their sources),
    ``unpaired_rows``, object counts (``n_gt_objects`` without ignore regions, ``n_ignore_regions``,
    ``ignored_pred_objects``: predictions on ignore regions), ``scores_missing``, ``class_agnostic``
    and ``mean_over_descs`` (AP, AP50, AP75 as COCOeval computes them with one class / one class
    per desc; precision, recall, F1 at IoU 0.5 with greedy score-ordered matching, labels ignored /
    required to be equal, predictions on ignore regions left out), ``per_desc`` (the same per GT
    description), ``pred_descs_not_in_gt`` and ``per_record``. An undefined metric (e.g. AP without
    any GT object) is ``None``. ``image_ids`` (one per record; default `jsonl_image_ids`) order the
    images for COCOeval as its sorted image ids do. ``pair_by`` is `pair_predictions`'. ``track``
    wraps the loop over records (a progress bar).
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if image_ids is None:
        image_ids = jsonl_image_ids(gt_records)
    if len(image_ids) != len(gt_records):
        raise ValueError(f"image_ids must give one id per record: {len(image_ids)} ids for {len(gt_records)} records")

    paired, unpaired = pair_predictions(pred_rows, gt_records, pair_by)
    pairs = []
    for rec, row in zip(gt_records, paired, strict=True):
        dets, invalid, no_score = prediction_objects(row)
        gts, ignore = gt_objects(rec)
        pairs.append(ImagePair(str(rec.source), rec.image, dets, gts, ignore,
                               "no prediction line" if row is None else _field(row, "parse_error"), invalid, no_score,
                               (rec.width, rec.height), missing=row is None))
    scored = evaluate_images(pairs, iou_type, max_dets, track, image_ids=image_ids)
    head = ("n_records", "n_pred_rows", "iou_type", "max_dets", "parse_failures", "parse_failure_rate")
    scored["n_pred_rows"] = len(pred_rows)
    return {**{k: scored[k] for k in head}, "missing_predictions": [p.source for p in pairs if p.missing],
            "unpaired_rows": unpaired, **{k: v for k, v in scored.items() if k not in head}}


def evaluate_images(pairs: Sequence[ImagePair], iou_type: str = "auto", max_dets: int = MAX_DETS,
                    track: Callable[[Iterable], Iterable] | None = None, *,
                    image_ids: Sequence[int | str] | None = None) -> dict:
    """`evaluate`'s metrics for images already paired with their predictions (`ImagePair`s), less the keys of
    the pairing (``n_pred_rows``, ``missing_predictions``, ``unpaired_rows``): what the GRPO reward
    `grounding_ap50` computes for one answer. ``image_ids`` (default 1, 2, ... in the given order) order the
    images for COCOeval as its sorted image ids do."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 1:
        raise ValueError(f"max_dets must be an integer >= 1, got {max_dets!r}")  # -1 dropped each image's last
    if image_ids is None:
        image_ids = list(range(1, len(pairs) + 1))
    if len(image_ids) != len(pairs):
        raise ValueError(f"image_ids must give one id per image: {len(image_ids)} ids for {len(pairs)} images")
    # Labels compared as `desc_key` gives them (NFC): per_desc and pred_descs_not_in_gt name them so.
    pairs = [dataclasses.replace(p, dets=_keyed(p.dets), gts=_keyed(p.gts)) for p in pairs]
    descs = sorted({o.desc for pair in pairs for o in pair.gts if o.desc})
    images: list[tuple[list[_Ref], list[_Ref]]] = []
    ious_by_image: list[np.ndarray] = []
    tp_any = tp_label = on_ignore_any = on_ignore_label = 0
    desc_counts: dict[str, Counter] = {d: Counter() for d in descs}
    foreign: Counter = Counter()
    per_record = []
    failures = invalid_total = no_score_total = n_pred_total = n_gt_total = n_ignore_total = over_max = 0
    for pair in (track(pairs) if track else pairs):
        source, parse_error, dets, gts, ignore = pair.source, pair.parse_error, pair.dets, pair.gts, pair.ignore
        invalid, no_score = pair.invalid, pair.no_score
        failures += parse_error is not None
        invalid_total += invalid
        no_score_total += no_score
        n_pred_total += len(dets)
        n_gt = int((~ignore).sum())
        n_gt_total += n_gt
        n_ignore_total += len(gts) - n_gt
        over_max += len(dets) > max_dets
        ious = np.asarray(pairwise_iou(dets, gts, iou_type, ignore, pair.size),
                          dtype=np.float64).reshape(len(dets), len(gts))
        scores = np.array([d.score for d in dets], dtype=np.float64)
        image = len(images)
        images.append(([_Ref(image, i, d) for i, d in enumerate(dets)],
                       [_Ref(image, j, g, bool(ignore[j])) for j, g in enumerate(gts)]))
        ious_by_image.append(ious)
        tp, on_ignore = _match_counts(ious, scores, ignore)
        tp_any += tp
        on_ignore_any += on_ignore
        # Label-aware P/R/F1: a match needs the same description, so match within each desc; an ignore
        # region without a desc applies to every desc.
        rec_tp_label = 0
        for desc in {d.desc for d in dets} | {g.desc for g in gts if g.desc}:
            di = [i for i, d in enumerate(dets) if d.desc == desc]
            gi = [j for j, g in enumerate(gts) if g.desc == desc or (ignore[j] and not g.desc)]
            n_tp, n_on_ignore = _match_counts(ious[np.ix_(di, gi)], scores[di], ignore[gi])
            rec_tp_label += n_tp
            on_ignore_label += n_on_ignore
            if desc in desc_counts:
                desc_counts[desc].update(tp=n_tp, pred=len(di) - n_on_ignore,
                                         gt=sum(not ignore[j] for j in gi), ignore=sum(bool(ignore[j]) for j in gi))
            else:
                foreign[desc] += len(di)
        tp_label += rec_tp_label
        per_record.append({"source": source, "image": pair.image, "parse_error": parse_error, "n_gt": n_gt,
                           "n_ignore": len(gts) - n_gt, "n_pred": len(dets), "tp": tp,
                           "fp": len(dets) - tp - on_ignore, "fn": n_gt - tp, "on_ignore": on_ignore,
                           "tp_label": rec_tp_label, "invalid_objects": invalid})

    def known_iou(dets: Sequence[_Ref], gts: Sequence[_Ref], crowd: np.ndarray) -> np.ndarray:
        # Computed once above, per image, with every GT's crowd flag: a subset's flags are the same.
        if not dets or not gts:
            return np.zeros((len(dets), len(gts)))
        return ious_by_image[dets[0].image][np.ix_([d.index for d in dets], [g.index for g in gts])]

    # COCOeval evaluates images in sorted-id order, and ranks tied scores across images in that order.
    order = sorted(range(len(images)), key=lambda i: coco_sort_key(image_ids[i]))
    in_order = [images[i] for i in order]
    agnostic = coco_precision(in_order, lambda r: (1,), 1, _xyxy, _score, known_iou, max_dets,
                              lambda r: r.ignore)
    desc_ids = {d: k for k, d in enumerate(descs, start=1)}
    all_descs = tuple(desc_ids.values())

    def categories_of(ref: _Ref) -> Iterable[int]:
        if ref.ignore and not ref.obj.desc:
            return all_descs
        return (desc_ids[ref.obj.desc],) if ref.obj.desc in desc_ids else ()

    by_desc = coco_precision(in_order, categories_of, len(descs), _xyxy, _score, known_iou, max_dets,
                             lambda r: r.ignore)
    n = len(pairs)
    n_scored = n_pred_total - on_ignore_any
    return {
        "n_records": n,
        "iou_type": iou_type,
        "max_dets": max_dets,
        "parse_failures": failures,
        "parse_failure_rate": failures / n if n else None,
        "n_gt_objects": n_gt_total,
        "n_ignore_regions": n_ignore_total,
        "n_pred_objects": n_pred_total,
        "ignored_pred_objects": on_ignore_any,
        "invalid_pred_objects": invalid_total,
        "scores_missing": no_score_total,
        "images_over_max_dets": over_max,
        "class_agnostic": {**ap_summary(agnostic), **_prf(tp_any, n_scored, n_gt_total)},
        "mean_over_descs": {**ap_summary(by_desc), **_prf(tp_label, n_pred_total - on_ignore_label, n_gt_total)},
        "per_desc": {d: {"n_gt": desc_counts[d]["gt"], "n_ignore": desc_counts[d]["ignore"],
                         "n_pred": desc_counts[d]["pred"],
                         **ap_summary(by_desc[:, :, desc_ids[d] - 1]),
                         **_prf(desc_counts[d]["tp"], desc_counts[d]["pred"], desc_counts[d]["gt"])}
                     for d in descs},
        "pred_descs_not_in_gt": dict(foreign.most_common()),
        "per_record": per_record,
    }


# ---------------------------------------------------------------------------- CLI


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def format_table(metrics: dict, max_descs: int = 15) -> str:
    """A short human-readable summary of :func:`evaluate`'s result."""
    n = metrics["n_records"]
    rate = metrics["parse_failure_rate"]
    lines = [
        f"records {n} | parse failures {metrics['parse_failures']}"
        + (f" ({100 * rate:.1f}%)" if rate is not None else "")
        + f" | missing prediction lines {len(metrics['missing_predictions'])}"
        + f" | GT objects {metrics['n_gt_objects']} | predicted {metrics['n_pred_objects']}"
        + f" | IoU {metrics['iou_type']}",
    ]
    if metrics.get("n_ignore_regions"):
        lines.append(f"ignore regions {metrics['n_ignore_regions']} (not counted as GT); "
                     f"{metrics['ignored_pred_objects']} predictions on them, neither true nor false positives")
    if metrics["scores_missing"]:
        lines.append(f"note: {metrics['scores_missing']} predicted objects had no score; scored 1.0, so AP ranks "
                     "them in file order")
    for key, what in (("invalid_pred_objects", "malformed predicted objects dropped"),
                      ("images_over_max_dets", f"images with more than {metrics['max_dets']} predictions "
                                               "(extra ones ignored by AP)")):
        if metrics[key]:
            lines.append(f"note: {metrics[key]} {what}")
    unpaired = metrics["unpaired_rows"]
    if unpaired["unknown_images"] or unpaired["duplicates"]:
        lines.append(f"note: prediction rows not used: {len(unpaired['unknown_images'])} for images not in the GT, "
                     f"{len(unpaired['duplicates'])} duplicates")
    header = f"{'':<28}{'AP':>7}{'AP50':>7}{'AP75':>7}{'P@.5':>7}{'R@.5':>7}{'F1@.5':>7}{'GT':>7}"
    lines += ["", header]

    def row(name: str, m: dict, n_gt: int | str) -> str:
        vals = "".join(" " + _fmt(m[k]) for k in ("AP", "AP50", "AP75", "precision", "recall", "f1"))
        return f"{name[:28]:<28}{vals}{n_gt:>7}"

    lines.append(row("class-agnostic", metrics["class_agnostic"], metrics["n_gt_objects"]))
    lines.append(row("mean over descs", metrics["mean_over_descs"], metrics["n_gt_objects"]))
    per_desc = sorted(metrics["per_desc"].items(), key=lambda kv: -kv[1]["n_gt"])
    for desc, m in per_desc[:max_descs]:
        lines.append(row(f"  {desc}", m, m["n_gt"]))
    if len(per_desc) > max_descs:
        lines.append(f"  ... {len(per_desc) - max_descs} more descriptions in the JSON")
    return "\n".join(lines)
