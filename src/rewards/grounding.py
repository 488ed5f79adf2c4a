"""Grounding rewards: each a pure function `(completion text, ground truth) -> float`.

The ground truth travels with each prompt as the objects of the reference answer, parsed by the same
parser as the completion (`truth_from_answer`), so both sides are in the answer's coordinate space (the
0..1000 grid for `emit_norm: norm1000`) and no reward re-derives pixels. IoU does not depend on that space:
box and polygon IoU are unchanged by scaling each axis.

Definitions (P predicted objects, G ground-truth objects, M the one-to-one matches at IoU >= 0.5 with equal
labels, found greedily from the highest IoU; box IoU for two boxes, polygon IoU when a quad is involved):

- `grounding_format`: 1 when the completion parses completely as the project's answer format (no junk, not
  cut off, no malformed entry), else 0. `[]` is a well-formed answer.
- `grounding_f1`: 2|M| / (|P| + |G|); for an image without objects, 1 for a well-formed empty answer (`[]`)
  and 0 for anything else (junk or a cut-off answer holds no objects either, but is no answer).
- `grounding_iou`: the mean IoU of the matches; 0 without a match; like F1 for an image without objects.
- `grounding_duplicates`: minus the share of predictions that repeat an earlier prediction of the same label
  (IoU >= 0.7): 0 (none) to near -1 (all the same object).
- `grounding_count`: minus |P - G| / max(G, 1), floored at -1.
- `grounding_ap50`: AP at IoU 0.5 of this one answer through the project's evaluation (src/evaluation),
  the mean over the true labels, predictions scored 1.0; like F1 for an image without objects, 0 when
  only one side is empty.

Ignore regions (the contract's `"ignore": true`: crowds, illegible text) travel with the truth apart from
its objects. A prediction that matches no true object and lies on an ignore region (its label equal to
the region's, or the region without one, and at least half of the prediction's own area inside the
region: COCOeval's rule for crowd regions) is set aside before F1, IoU, count and AP50: it is neither a
match nor a false positive, so the model is neither rewarded nor punished for it. `grounding_duplicates`
still counts every prediction (a repeat is a repeat wherever it lies).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from src.datasets.answer import parse_answer
from src.datasets.geometry import pixel_to_norm, xyxy_to_quad8
from src.evaluation.metrics import match_greedy, pairwise_iou
from src.inference.predictions import PredictedObject

MATCH_IOU = 0.5
DUPLICATE_IOU = 0.7


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """The objects a prompt's answer should hold, in the answer's coordinate space."""

    objects: tuple[PredictedObject, ...]
    ignore: tuple[PredictedObject, ...] = ()
    """Ignore regions in the same space (desc "" when the region has none: it then covers every label)."""

    def to_json(self) -> str:
        """The form that travels in a dataset column (an ignore region's entry says `"ignore": true`)."""
        return json.dumps([{"kind": o.kind, "points": list(o.points), "desc": o.desc} for o in self.objects]
                          + [{"kind": o.kind, "points": list(o.points), "desc": o.desc, "ignore": True}
                             for o in self.ignore], ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        """The inverse of `to_json`."""
        entries = json.loads(text)

        def objects(ignore: bool) -> tuple[PredictedObject, ...]:
            return tuple(PredictedObject(kind=o["kind"], points=tuple(o["points"]), desc=o["desc"])
                         for o in entries if bool(o.get("ignore")) == ignore)

        return cls(objects(False), objects(True))


def _objects(parsed_objects: Sequence[dict]) -> tuple[PredictedObject, ...]:
    return tuple(PredictedObject(kind=o["kind"], points=tuple(float(v) for v in o["coords"]), desc=o["label"])
                 for o in parsed_objects)


# Every reward of a step reads the same completions: each is parsed once (the result is never mutated).
_parsed = functools.lru_cache(maxsize=4096)(parse_answer)


def truth_from_answer(answer: str, ignore: Sequence[PredictedObject] = ()) -> GroundTruth:
    """The ground truth of a reference answer (as the builder writes it): its objects, parsed; `ignore` the
    row's ignore regions in the answer's space (`ignore_regions`), which the answer never holds."""
    parsed = parse_answer(answer)
    if parsed.error:
        raise ValueError(f"the reference answer does not parse: {parsed.error}")
    return GroundTruth(_objects(parsed.objects), tuple(ignore))


def ignore_regions(geometry_px: str, emit_norm: str) -> tuple[PredictedObject, ...]:
    """The ignore regions of a row's pixel geometry (`ROW_GEOMETRY_KEY`, as `geometry_payload` writes it) in the
    answer's space `emit_norm`, by the same `pixel_to_norm` the answer is written with."""
    out = []
    for image in json.loads(geometry_px):
        for o in image["objects"]:
            if o.get("ignore"):
                points = pixel_to_norm(np.asarray(o["points"], dtype=float), image["width"], image["height"],
                                       emit_norm)
                out.append(PredictedObject(kind=o["kind"], points=tuple(float(v) for v in points), desc=o["desc"]))
    return tuple(out)


def predicted(completion: str) -> tuple[PredictedObject, ...]:
    """The complete objects of a completion (what the evaluation would count)."""
    return _objects(_parsed(completion).objects)


def _label_iou(dets: Sequence[PredictedObject], gts: Sequence[PredictedObject]) -> np.ndarray:
    """IoU where the labels agree, 0 elsewhere."""
    ious = pairwise_iou(list(dets), list(gts))
    if ious.size:
        same = np.array([[d.desc == g.desc for g in gts] for d in dets])
        ious = np.where(same, ious, 0.0)
    return ious


def matches(dets: Sequence[PredictedObject], gts: Sequence[PredictedObject], iou: float = MATCH_IOU) -> list[float]:
    """The IoU of each one-to-one match (labels equal, IoU >= `iou`), highest IoU first."""
    ious = _label_iou(dets, gts)
    if not ious.size:
        return []
    best = ious.max(axis=1)  # visiting predictions by their best IoU: the greedy one-to-one matching
    det_to_gt, _ = match_greedy(ious, best, iou)
    return sorted((float(ious[d, g]) for d, g in enumerate(det_to_gt) if g >= 0), reverse=True)


def _coverage(dets: Sequence[PredictedObject], regions: Sequence[PredictedObject]) -> np.ndarray:
    """``(len(dets), len(regions))``: the share of each prediction's own area inside each region (boxes as
    their 4-corner polygons); 0 for a prediction without area."""
    import shapely

    def polygons(objects: Sequence[PredictedObject]):
        quads = [xyxy_to_quad8([o.points])[0] if o.kind == "bbox_2d" else o.points for o in objects]
        return shapely.make_valid(shapely.polygons(np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)))

    det_polygons, region_polygons = polygons(dets), polygons(regions)
    inside = shapely.area(shapely.intersection(det_polygons[:, None], region_polygons[None, :]))
    area = shapely.area(det_polygons)[:, None]
    return np.divide(inside, area, out=np.zeros_like(inside), where=area > 0)


def scored(completion: str, truth: GroundTruth) -> tuple[PredictedObject, ...]:
    """The completion's objects that count: those matching no true object and lying on an ignore region (see
    the module docstring) are set aside."""
    dets = predicted(completion)
    if not truth.ignore or not dets:
        return dets
    ious = _label_iou(dets, truth.objects)
    matched = np.zeros(len(dets), dtype=bool)
    if ious.size:
        det_to_gt, _ = match_greedy(ious, ious.max(axis=1), MATCH_IOU)
        matched = np.asarray(det_to_gt) >= 0
    covered = _coverage(dets, truth.ignore) >= MATCH_IOU
    same = np.array([[not r.desc or d.desc == r.desc for r in truth.ignore] for d in dets], dtype=bool)
    aside = ~matched & (covered & same).any(axis=1)
    return tuple(d for d, out in zip(dets, aside, strict=True) if not out)


def format_reward(completion: str, truth: GroundTruth) -> float:
    """1.0 when the completion parses completely as the answer format, else 0.0."""
    parsed = _parsed(completion)
    return float(parsed.error is None and parsed.junk_chars == 0)


def _nothing_to_find(completion: str, truth: GroundTruth) -> float:
    """The reward for an image without objects: 1.0 for a well-formed answer without a prediction that counts
    (`[]`, or only predictions set aside on ignore regions), 0.0 for anything else."""
    return float(_parsed(completion).error is None and not scored(completion, truth))


def f1_reward(completion: str, truth: GroundTruth) -> float:
    """F1 at IoU 0.5 with labels required to match (an image without objects: `_nothing_to_find`)."""
    dets = scored(completion, truth)
    if not truth.objects:
        return _nothing_to_find(completion, truth)
    return 2 * len(matches(dets, truth.objects)) / (len(dets) + len(truth.objects))


def iou_reward(completion: str, truth: GroundTruth) -> float:
    """Mean IoU of the matches (localisation quality); 0.0 without one (an image without objects:
    `_nothing_to_find`)."""
    dets = scored(completion, truth)
    if not truth.objects:
        return _nothing_to_find(completion, truth)
    found = matches(dets, truth.objects)
    return float(np.mean(found)) if found else 0.0


def duplicate_penalty(completion: str, truth: GroundTruth) -> float:
    """Minus the share of predictions that repeat an earlier one (same label, IoU >= 0.7)."""
    dets = predicted(completion)
    if len(dets) < 2:
        return 0.0
    ious = _label_iou(dets, dets)
    repeats = sum(bool((ious[i, :i] >= DUPLICATE_IOU).any()) for i in range(1, len(dets)))
    return -repeats / len(dets)


def count_penalty(completion: str, truth: GroundTruth) -> float:
    """Minus |predicted - true| / max(true, 1), floored at -1: too many or too few objects."""
    return 0.0 - min(1.0, abs(len(scored(completion, truth)) - len(truth.objects)) / max(len(truth.objects), 1))


def ap50_reward(completion: str, truth: GroundTruth) -> float:
    """AP at IoU 0.5 of this answer alone (mean over the labels), by the project's evaluation
    (`src.evaluation.metrics.evaluate`), predictions scored 1.0 in answer order."""
    from src.datasets.contract import GroundingObject, Record, SourceRef
    from src.evaluation.metrics import evaluate

    dets = scored(completion, truth)
    if not truth.objects:
        return _nothing_to_find(completion, truth)
    if not dets:
        return 0.0
    record = Record(image="answer", width=1000, height=1000, summary=None, source=SourceRef(file="answer", line=1),
                    objects=tuple(GroundingObject(kind=o.kind, points=o.points, desc=o.desc)
                                  for o in truth.objects))
    row = {"image": "answer", "objects": [{"kind": o.kind, "points": list(o.points), "desc": o.desc, "score": 1.0}
                                          for o in dets]}
    return float(evaluate([row], [record])["mean_over_descs"]["AP50"] or 0.0)


Reward = Callable[[str, GroundTruth], float]
# The rewards by the name a config gives them (`rlhf.reward_funcs`); ms-swift logs `rewards/<name>/mean`.
REWARDS: dict[str, Reward] = {
    "grounding_format": format_reward,
    "grounding_f1": f1_reward,
    "grounding_iou": iou_reward,
    "grounding_duplicates": duplicate_penalty,
    "grounding_count": count_penalty,
    "grounding_ap50": ap50_reward,
}
