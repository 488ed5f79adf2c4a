"""COCO AP through the reference implementation: pycocotools' `COCOeval`, with the project's IoU rule.

`COCOeval` ranks, matches and accumulates exactly as every COCO number users know; only its
`computeIoU` is replaced, so that a pair involving a quad is scored by polygon IoU (see
`src.evaluation.metrics.pairwise_iou`). Evaluation is on one area range that holds every area, with
`maxDets = [max_dets]`: pycocotools' "all" ends at 1e10 (1e5 px squared), and COCOeval silently ignores a
ground-truth object, or an unmatched detection, outside its range; a gigapixel image's objects, or a hostile
answer's box, reach that size, and must still count as a miss or a false positive. Where every object and
detection is smaller (any detector's boxes on COCO images) the numbers are pycocotools' own.
A ground-truth object marked as an ignore region becomes a crowd annotation (`iscrowd: 1`): COCOeval
then lets any number of detections match it, counts none of them as a true or a false positive, and
the IoU against it is intersection over the detection's own area (the IoU function is told which
ground-truth objects are crowd).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# A pairwise IoU (detections x ground truth) of any objects carried in the annotations' "obj" field; the
# third argument flags the crowd (ignore) ground-truth objects, whose IoU divides by the detection's area.
IouFn = Callable[[Sequence[Any], Sequence[Any], np.ndarray], np.ndarray]
AREA_ALL = [0.0, float("inf")]  # every area (see the module docstring)


class GroundingCOCOeval(COCOeval):
    """`COCOeval` whose IoU is `iou_fn` over the objects each annotation carries in `"obj"`."""

    def __init__(self, gt: COCO, dt: COCO, iou_fn: IouFn):
        super().__init__(gt, dt, "bbox")
        self.iou_fn = iou_fn

    def computeIoU(self, imgId, catId):  # noqa: N802, N803 - COCOeval's names
        # As COCOeval.computeIoU: detections by descending score (stable), at most maxDets[-1] of them.
        p = self.params
        gt = self._gts[imgId, catId] if p.useCats else [a for c in p.catIds for a in self._gts[imgId, c]]
        dt = self._dts[imgId, catId] if p.useCats else [a for c in p.catIds for a in self._dts[imgId, c]]
        if not gt and not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        crowd = np.array([bool(g["iscrowd"]) for g in gt], dtype=bool)
        return np.asarray(self.iou_fn([d["obj"] for d in dt], [g["obj"] for g in gt], crowd), dtype=np.float64)


def _coco(images: int, categories: int, annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in range(1, images + 1)],
                    "categories": [{"id": k} for k in range(1, categories + 1)], "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def _annotation(ann_id: int, image_id: int, category: int, xyxy: Sequence[float], obj: Any,
                score: float | None, crowd: bool = False) -> dict:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    ann = {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1],
           "area": max(0.0, (x2 - x1) * (y2 - y1)), "iscrowd": int(crowd), "obj": obj}
    if score is not None:
        ann["score"] = float(score)
    return ann


def coco_precision(images: Sequence[tuple[Sequence[Any], Sequence[Any]]],
                   categories_of: Callable[[Any], Iterable[int]], n_categories: int,
                   xyxy_of: Callable[[Any], Sequence[float]], score_of: Callable[[Any], float],
                   iou_fn: IouFn, max_dets: int, crowd_of: Callable[[Any], bool] = lambda obj: False) -> np.ndarray:
    """COCOeval's precision `(T, R, K)` (IoU thresholds x 101 recall points x categories; -1 where a
    category has no ground truth that is not crowd) for `images`, a list of (detections, ground truth)
    per image, evaluated in that order (it decides how score ties across images rank, as COCOeval's
    sorted image ids do).

    `categories_of` gives an object's categories (1..n_categories): none leaves it out, several put a
    ground-truth object in each (an ignore region that applies to every category). `crowd_of` marks the
    ground-truth objects that are crowd (ignore) regions.
    """
    gts, dts = [], []
    for image_id, (dets, truths) in enumerate(images, start=1):
        for obj in truths:
            for category in categories_of(obj):
                gts.append(_annotation(len(gts) + 1, image_id, category, xyxy_of(obj), obj, None, crowd_of(obj)))
        for obj in dets:
            for category in categories_of(obj):
                dts.append(_annotation(len(dts) + 1, image_id, category, xyxy_of(obj), obj, score_of(obj)))
    evaluator = GroundingCOCOeval(_coco(len(images), n_categories, gts), _coco(len(images), n_categories, dts),
                                  iou_fn)
    params = evaluator.params
    params.imgIds = list(range(1, len(images) + 1))
    params.catIds = list(range(1, n_categories + 1))
    params.maxDets = [max_dets]  # COCOeval sorts this list; one value keeps index -1 = max_dets
    params.areaRng, params.areaRngLbl = [AREA_ALL], ["all"]
    with contextlib.redirect_stdout(io.StringIO()):  # evaluate/accumulate print their timings
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, -1]


def ap_summary(precision: np.ndarray) -> dict[str, float | None]:
    """AP@[.5:.95], AP50 and AP75 from a `(T, R, ...)` precision block, as COCOeval.summarize averages
    it (valid entries only); None when no entry is valid (no ground truth)."""

    def mean(block: np.ndarray) -> float | None:
        valid = block[block > -1]
        return float(valid.mean()) if valid.size else None

    return {"AP": mean(precision), "AP50": mean(precision[0]), "AP75": mean(precision[5])}
