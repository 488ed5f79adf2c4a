"""The grounding rewards computed the straightforward way: every pair of objects compared one by one, labels by
`desc_key` per pair, each object's shape built anew for each pair, nothing shared between the rewards. What
`src/rewards/grounding.py` must equal (tests/test_rewards_reference.py) and the baseline of
bench/rewards_speed.py. Completions are read by the rewards' own reader (`predicted`, `format_reward`): the
reference is of the scoring, not of the parsing."""

from __future__ import annotations

import numpy as np
import shapely

from src.datasets import kinds
from src.datasets.kinds.base import LINEWORK_VERTICES
from src.datasets.objects import GeoObject
from src.evaluation.metrics import ImagePair, desc_key, evaluate_images, match_greedy
from src.rewards.grounding import DUPLICATE_IOU, MATCH_IOU, GroundTruth, format_reward, predicted


def _shape(obj: GeoObject):  # noqa: ANN202 - a shapely geometry
    # Built anew each time, repaired by make_valid when it crosses itself: no shape kept between pairs.
    kind = kinds.get(obj.kind)
    if not kind.region:
        return shapely.Point(obj.points)
    outline = kind.vertices(np.asarray([obj.points], dtype=np.float64)).reshape(-1, 2)
    polygon = shapely.Polygon(outline)
    if polygon.is_valid:
        return polygon
    if len(outline) <= LINEWORK_VERTICES:
        return shapely.make_valid(polygon)
    return shapely.make_valid(polygon, method="structure", keep_collapsed=False)


def pair_iou(a: GeoObject, b: GeoObject, size: tuple[float, float] | None, crowd: bool = False) -> float:
    """The similarity of one prediction `a` and one object `b`, as the geometry spec words it."""
    region_a, region_b = kinds.get(a.kind).region, kinds.get(b.kind).region
    if not region_a and not region_b:
        if size is None:
            raise ValueError("two points need a size")
        d = np.hypot((a.points[0] - b.points[0]) / size[0], (a.points[1] - b.points[1]) / size[1])
        return max(0.0, 1.0 - d / kinds.POINT_RADIUS)
    if not region_a or not region_b:
        point, region = (a, b) if not region_a else (b, a)
        return float(shapely.covers(_shape(region), shapely.Point(point.points)))
    if kinds.get(a.kind).axis_aligned and kinds.get(b.kind).axis_aligned:
        ax1, ay1, ax2, ay2 = a.points
        bx1, by1, bx2, by2 = b.points
        inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
        area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
        union = area_a if crowd else area_a + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
        return inter / union if union > 0 else 0.0
    sa, sb = _shape(a), _shape(b)
    inter = float(shapely.area(shapely.intersection(sa, sb)))
    union = float(shapely.area(sa)) if crowd else float(shapely.area(sa) + shapely.area(sb)) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(dets, gts, size) -> np.ndarray:  # noqa: ANN001
    """`pair_iou` of every pair, labels ignored."""
    out = np.zeros((len(dets), len(gts)))
    for i, d in enumerate(dets):
        for j, g in enumerate(gts):
            out[i, j] = pair_iou(d, g, size)
    return out


def label_iou(dets, gts, size) -> np.ndarray:  # noqa: ANN001
    """`pair_iou` where `desc_key`s agree, 0 elsewhere."""
    out = np.zeros((len(dets), len(gts)))
    for i, d in enumerate(dets):
        for j, g in enumerate(gts):
            if desc_key(d.desc) == desc_key(g.desc):
                out[i, j] = pair_iou(d, g, size)
    return out


def matches(dets, gts, size) -> list[float]:  # noqa: ANN001
    ious = label_iou(dets, gts, size)
    if not ious.size:
        return []
    det_to_gt, _ = match_greedy(ious, ious.max(axis=1), MATCH_IOU)
    return sorted((float(ious[d, g]) for d, g in enumerate(det_to_gt) if g >= 0), reverse=True)


def scored(completion: str, truth: GroundTruth) -> list[GeoObject]:
    dets = list(predicted(completion))
    if not truth.ignore or not dets:
        return dets
    ious = label_iou(dets, truth.objects, truth.size)
    matched = [False] * len(dets)
    if ious.size:
        det_to_gt, _ = match_greedy(ious, ious.max(axis=1), MATCH_IOU)
        matched = [g >= 0 for g in det_to_gt]
    kept = []
    for d, was_matched in zip(dets, matched, strict=True):
        aside = False
        for region in truth.ignore:
            if region.desc and desc_key(region.desc) != desc_key(d.desc):
                continue
            shape, cover = _shape(d), _shape(region)
            area = float(shapely.area(shape))
            share = (float(shapely.area(shapely.intersection(shape, cover))) / area if area > 0
                     else float(shapely.covers(cover, shape)))
            aside = aside or share >= MATCH_IOU
        if was_matched or not aside:
            kept.append(d)
    return kept


def rewards(completion: str, truth: GroundTruth) -> dict[str, float]:
    """Every reward of `src.rewards.grounding.REWARDS`, by name."""
    dets = scored(completion, truth)
    well_formed = format_reward(completion, truth)
    out = {"grounding_format": well_formed}
    if not truth.objects:
        nothing = float(well_formed == 1.0 and not dets)
        out.update(grounding_f1=nothing, grounding_iou=nothing, grounding_ap50=nothing)
    else:
        found = matches(dets, truth.objects, truth.size)
        out["grounding_f1"] = 2 * len(found) / (len(dets) + len(truth.objects))
        out["grounding_iou"] = float(np.mean(found)) if found else 0.0
        image = ImagePair("answer", "answer", dets, truth.objects, np.zeros(len(truth.objects), dtype=bool),
                          size=truth.size)
        out["grounding_ap50"] = (float(evaluate_images([image])["mean_over_descs"]["AP50"] or 0.0) if dets else 0.0)
    every = predicted(completion)
    repeats = 0
    for i in range(1, len(every)):
        repeats += any(desc_key(every[i].desc) == desc_key(every[j].desc)
                       and pair_iou(every[i], every[j], truth.size) >= DUPLICATE_IOU for j in range(i))
    out["grounding_duplicates"] = -repeats / len(every) if len(every) >= 2 else 0.0
    out["grounding_count"] = 0.0 - min(1.0, abs(len(dets) - len(truth.objects)) / max(len(truth.objects), 1))
    return out
