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
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from src.datasets.answer import parse_answer
from src.evaluation.metrics import match_greedy, pairwise_iou
from src.inference.predictions import PredictedObject

MATCH_IOU = 0.5
DUPLICATE_IOU = 0.7


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """The objects a prompt's answer should hold, in the answer's coordinate space."""

    objects: tuple[PredictedObject, ...]

    def to_json(self) -> str:
        """The form that travels in a dataset column."""
        return json.dumps([{"kind": o.kind, "points": list(o.points), "desc": o.desc} for o in self.objects],
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        """The inverse of `to_json`."""
        return cls(tuple(PredictedObject(kind=o["kind"], points=tuple(o["points"]), desc=o["desc"])
                         for o in json.loads(text)))


def _objects(parsed_objects: Sequence[dict]) -> tuple[PredictedObject, ...]:
    return tuple(PredictedObject(kind=o["kind"], points=tuple(float(v) for v in o["coords"]), desc=o["label"])
                 for o in parsed_objects)


# Every reward of a step reads the same completions: each is parsed once (the result is never mutated).
_parsed = functools.lru_cache(maxsize=4096)(parse_answer)


def truth_from_answer(answer: str) -> GroundTruth:
    """The ground truth of a reference answer (as the builder writes it): its objects, parsed."""
    parsed = parse_answer(answer)
    if parsed.error:
        raise ValueError(f"the reference answer does not parse: {parsed.error}")
    return GroundTruth(_objects(parsed.objects))


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


def format_reward(completion: str, truth: GroundTruth) -> float:
    """1.0 when the completion parses completely as the answer format, else 0.0."""
    parsed = _parsed(completion)
    return float(parsed.error is None and parsed.junk_chars == 0)


def _nothing_to_find(completion: str) -> float:
    """The reward for an image without objects: 1.0 for a well-formed empty answer, 0.0 for anything else."""
    return float(_parsed(completion).error is None and not predicted(completion))


def f1_reward(completion: str, truth: GroundTruth) -> float:
    """F1 at IoU 0.5 with labels required to match (an image without objects: `_nothing_to_find`)."""
    dets = predicted(completion)
    if not truth.objects:
        return _nothing_to_find(completion)
    return 2 * len(matches(dets, truth.objects)) / (len(dets) + len(truth.objects))


def iou_reward(completion: str, truth: GroundTruth) -> float:
    """Mean IoU of the matches (localisation quality); 0.0 without one (an image without objects:
    `_nothing_to_find`)."""
    dets = predicted(completion)
    if not truth.objects:
        return _nothing_to_find(completion)
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
    return 0.0 - min(1.0, abs(len(predicted(completion)) - len(truth.objects)) / max(len(truth.objects), 1))


def ap50_reward(completion: str, truth: GroundTruth) -> float:
    """AP at IoU 0.5 of this answer alone (mean over the labels), by the project's evaluation
    (`src.evaluation.metrics.evaluate`), predictions scored 1.0 in answer order."""
    from src.datasets.contract import GroundingObject, Record, SourceRef
    from src.evaluation.metrics import evaluate

    dets = predicted(completion)
    if not truth.objects:
        return _nothing_to_find(completion)
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
