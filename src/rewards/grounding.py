"""Grounding rewards: each a pure function `(completion text, ground truth) -> float`.

The ground truth travels with each prompt as the objects its reference answer holds, in the answer's coordinate
space (the 0..1000 grid for `emit_norm: norm1000`): `truth_for` takes them from the prompt's records through the
builder's answer codec (src/datasets/builders/codec.py), the code that writes the reference answer, with no text
in between; `truth_from_answer` reads them from an answer text instead. Completions are read by the same codec
(`read_answer`), so both sides are object records (src/datasets/objects.py) in one space and no reward re-derives
pixels. IoU does not depend on that space: box and polygon IoU are unchanged by scaling each axis.

Definitions (P predicted objects, G ground-truth objects, M the one-to-one matches at IoU >= 0.5 with equal
labels, found greedily from the highest IoU; box IoU for two boxes, polygon IoU when a quad is involved):

- `grounding_format`: 1 when the completion parses completely as the project's answer format (no junk, not
  cut off, no malformed entry: an entry with a non-finite value is one, dropped and never scored, and so is an
  outline crossing itself with more than `MAX_REPAIRED_VERTICES` vertices, whose repair would stall the step),
  else 0.
  `[]` is a well-formed answer. A text json cannot read at all is an answer without objects: no reward raises.
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

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from src.datasets import kinds
from src.datasets.answer import ParsedAnswer
from src.datasets.builders import AnswerCodec, ObjectsOnImage, read_answer
from src.datasets.objects import GeoObject, values_fit
from src.evaluation.metrics import ImagePair, desc_key, evaluate_images, match_greedy, pairwise_iou

MATCH_IOU = 0.5
DUPLICATE_IOU = 0.7
MAX_REPAIRED_VERTICES = 200
"""An outline that crosses itself is repaired (shapely's `make_valid`, `kinds.base.LINEWORK_VERTICES`) before its IoU
is computed, at a cost that still grows faster than its vertex count (a 200-vertex scribble: 0.05 s, 1,000: 3.3 s):
past this many vertices such an outline is a malformed entry for the rewards (`read_completion`). An outline that
does not cross itself is never refused."""


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """The objects a prompt's answer should hold, in the answer's coordinate space.

    It travels to the rewards as itself, in the `grounding_truth` column of the GRPO rows (src/training/grpo.py):
    ms-swift deep-copies dataset columns into each sample, pickles samples across ranks (`gather_object`) and,
    with `vllm_server_pass_dataset`, sends them to the rollout server through `dataclasses.asdict`; a frozen
    dataclass of tuples goes through all three unchanged, so no text form is needed."""

    objects: tuple[GeoObject, ...]
    ignore: tuple[GeoObject, ...] = ()
    """Ignore regions in the same space (desc "" when the region has none: it then covers every label)."""
    size: tuple[float, float] | None = None
    """``(width, height)`` of the answer's space (the grid's, or the image's for pixel answers); points are
    compared relative to it. None when unknown (then two points cannot be compared)."""


def truth_for(images: Sequence[ObjectsOnImage], codec: AnswerCodec) -> GroundTruth:
    """The ground truth of the answer `codec` writes about `images` (a prompt's records, as the builder focused
    them): the objects it holds and the ignore regions (which it never holds), both in its space."""
    return GroundTruth(tuple(codec.answer_objects(images)), tuple(codec.ignore_objects(images)),
                       codec.space_size(images))


def read_completion(completion: str) -> tuple[ParsedAnswer, tuple[GeoObject, ...]]:
    """A completion read as the rewards count it: `read_answer`, less what no reward may score. An object with a
    non-finite value (Python's json reads `NaN`, `Infinity` and `1e400`) is dropped and counted as a bad entry,
    which makes the answer not well formed, and so is an outline crossing itself past `MAX_REPAIRED_VERTICES`
    vertices; a text json cannot read at all (nesting past its recursion limit,
    an integer past int()'s digit limit) is an answer without objects, as junk is. Never raises: a reward that
    raises stops the GRPO step."""
    try:
        parsed, found = read_answer(completion)
    except (RecursionError, ValueError) as exc:  # json's own limits, reached by a degenerate generation
        return ParsedAnswer(error=f"unreadable answer ({type(exc).__name__})", format="json"), ()
    finite = [i for i, o in enumerate(found) if values_fit(o.kind, o.points)]
    keep = [i for i in finite if not _beyond_repair(found[i])]
    if len(keep) == len(found):
        return parsed, found
    dropped = len(found) - len(keep)
    problems = [parsed.error]
    if len(finite) < len(found):
        problems.append(f"{len(found) - len(finite)} entries with a non-finite value")
    if len(keep) < len(finite):
        problems.append(f"{len(finite) - len(keep)} outlines crossing themselves with more than "
                        f"{MAX_REPAIRED_VERTICES} vertices")
    error = "; ".join(filter(None, problems))
    return (dataclasses.replace(parsed, objects=[parsed.objects[i] for i in keep],
                                bad_entries=parsed.bad_entries + dropped, error=error),
            tuple(found[i] for i in keep))


def _beyond_repair(obj: GeoObject) -> bool:
    """Whether `obj` is an outline of more than `MAX_REPAIRED_VERTICES` vertices that crosses itself."""
    kind = kinds.get(obj.kind)
    if not kind.region or len(obj.points) <= 2 * MAX_REPAIRED_VERTICES:
        return False
    verts = kind.vertices(np.asarray([obj.points], dtype=np.float64))
    if verts.shape[1] <= 2 * MAX_REPAIRED_VERTICES:
        return False
    import shapely

    return not bool(shapely.is_valid(shapely.polygons(verts.reshape(-1, 2))))


# Every reward of a step reads the same completions: each is read once (the result is never mutated).
_read = functools.lru_cache(maxsize=4096)(read_completion)


def truth_from_answer(answer: str, ignore: Sequence[GeoObject] = (),
                      size: tuple[float, float] | None = (1000.0, 1000.0)) -> GroundTruth:
    """The ground truth of a reference answer text: its objects, read by the codec; `ignore` the ignore regions
    in the answer's space, which the answer never holds; `size` the answer space's (the norm1000 grid's by
    default). Raises ValueError when the answer does not parse completely."""
    parsed, found = read_answer(answer)
    if parsed.error:
        raise ValueError(f"the reference answer does not parse: {parsed.error}")
    return GroundTruth(found, tuple(ignore), size)


def predicted(completion: str) -> tuple[GeoObject, ...]:
    """The complete objects of a completion (what the evaluation would count)."""
    return _read(completion)[1]


def _label_codes(*sides: Sequence[GeoObject]) -> list[np.ndarray]:
    """Each side's labels as integers, equal where `desc_key` is equal (across all the sides)."""
    by_desc: dict[str, int] = {}
    by_key: dict[str, int] = {}

    def code(desc: str) -> int:
        found = by_desc.get(desc)
        if found is None:  # desc_key (an NFC check) once per distinct text, not once per pair
            found = by_desc[desc] = by_key.setdefault(desc_key(desc), len(by_key))
        return found

    return [np.fromiter((code(o.desc) for o in side), dtype=np.int64, count=len(side)) for side in sides]


def _label_iou(dets: Sequence[GeoObject], gts: Sequence[GeoObject],
               size: tuple[float, float] | None = None) -> np.ndarray:
    """IoU where the labels agree (`desc_key`), 0 elsewhere; only pairs of one label are compared."""
    ious = np.zeros((len(dets), len(gts)))
    if not ious.size:
        return ious
    det_codes, gt_codes = _label_codes(dets, gts)
    for label in np.intersect1d(det_codes, gt_codes):
        rows, cols = np.flatnonzero(det_codes == label), np.flatnonzero(gt_codes == label)
        ious[np.ix_(rows, cols)] = pairwise_iou([dets[i] for i in rows], [gts[j] for j in cols], size=size)
    return ious


def matches(dets: Sequence[GeoObject], gts: Sequence[GeoObject], iou: float = MATCH_IOU,
            size: tuple[float, float] | None = None) -> list[float]:
    """The IoU of each one-to-one match (labels equal, IoU >= `iou`), highest IoU first; `size` the space's
    (points are compared relative to it)."""
    return _matched(_label_iou(dets, gts, size), iou)


def _matched(ious: np.ndarray, iou: float = MATCH_IOU) -> list[float]:
    """`matches` of the label IoU matrix `ious`."""
    if not ious.size:
        return []
    best = ious.max(axis=1)  # visiting predictions by their best IoU: the greedy one-to-one matching
    det_to_gt, _ = match_greedy(ious, best, iou)
    return sorted((float(ious[d, g]) for d, g in enumerate(det_to_gt) if g >= 0), reverse=True)


def _coverage(dets: Sequence[GeoObject], regions: Sequence[GeoObject]) -> np.ndarray:
    """``(len(dets), len(regions))``: the share of each prediction's own area inside each region (each as its
    kind's shape, `src.datasets.kinds`); a prediction without area (a point) counts 1 inside a region, else 0."""
    import shapely

    def shapes(objects: Sequence[GeoObject]) -> np.ndarray:
        return np.array([kinds.get(o.kind).shapes(np.asarray([o.points], dtype=np.float64))[0] for o in objects],
                        dtype=object)

    det_shapes, region_shapes = shapes(dets), shapes(regions)
    inside = shapely.area(shapely.intersection(det_shapes[:, None], region_shapes[None, :]))
    area = shapely.area(det_shapes)[:, None]
    share = np.divide(inside, area, out=np.zeros_like(inside), where=area > 0)
    covered = shapely.covers(region_shapes[None, :], det_shapes[:, None]).astype(np.float64)
    return np.where(area > 0, share, covered)


@dataclass(frozen=True, slots=True)
class _Scoring:
    """What F1, IoU, count and AP50 read of one completion against one truth, computed once for all of them."""

    dets: tuple[GeoObject, ...]
    """`scored`'s objects."""
    matches: tuple[float, ...]
    """`matches` of them against the truth's objects."""


def _scoring(completion: str, truth: GroundTruth) -> _Scoring:
    dets = predicted(completion)
    ious = _label_iou(dets, truth.objects, truth.size)
    if truth.ignore and dets:
        matched = np.zeros(len(dets), dtype=bool)
        if ious.size:
            det_to_gt, _ = match_greedy(ious, ious.max(axis=1), MATCH_IOU)
            matched = np.asarray(det_to_gt) >= 0
        det_codes, region_codes = _label_codes(dets, truth.ignore)
        same = (region_codes[None, :] == det_codes[:, None]) | np.array([not r.desc for r in truth.ignore])[None, :]
        # Coverage only where it can set a prediction aside: unmatched, under a region of its label.
        candidates = np.flatnonzero(~matched & same.any(axis=1))
        covered = np.zeros(same.shape, dtype=bool)
        if len(candidates):
            covered[candidates] = _coverage([dets[i] for i in candidates], truth.ignore) >= MATCH_IOU
        keep = ~(covered & same).any(axis=1)
        dets, ious = tuple(d for d, k in zip(dets, keep, strict=True) if k), ious[keep]
    return _Scoring(dets, tuple(_matched(ious)))


_scoring_cached = functools.lru_cache(maxsize=4096)(_scoring)


def _scored(completion: str, truth: GroundTruth) -> _Scoring:
    """`_scoring`, once per completion and truth for the rewards of a step (each reward reads every completion
    of the batch in turn); computed anew for a truth that cannot be hashed (objects built with list values)."""
    try:
        return _scoring_cached(completion, truth)
    except TypeError:
        return _scoring(completion, truth)


def scored(completion: str, truth: GroundTruth) -> tuple[GeoObject, ...]:
    """The completion's objects that count: those matching no true object and lying on an ignore region (see
    the module docstring) are set aside."""
    return _scored(completion, truth).dets


def format_reward(completion: str, truth: GroundTruth) -> float:
    """1.0 when the completion parses completely as the answer format, else 0.0."""
    parsed = _read(completion)[0]
    return float(parsed.error is None and parsed.junk_chars == 0)


def _nothing_to_find(completion: str, truth: GroundTruth) -> float:
    """The reward for an image without objects: 1.0 for a well-formed answer (`format_reward`: no junk around
    it either) without a prediction that counts (`[]`, or only predictions set aside on ignore regions), 0.0 for
    anything else."""
    return float(format_reward(completion, truth) == 1.0 and not scored(completion, truth))


def f1_reward(completion: str, truth: GroundTruth) -> float:
    """F1 at IoU 0.5 with labels required to match (an image without objects: `_nothing_to_find`)."""
    if not truth.objects:
        return _nothing_to_find(completion, truth)
    found = _scored(completion, truth)
    return 2 * len(found.matches) / (len(found.dets) + len(truth.objects))


def iou_reward(completion: str, truth: GroundTruth) -> float:
    """Mean IoU of the matches (localisation quality); 0.0 without one (an image without objects:
    `_nothing_to_find`)."""
    if not truth.objects:
        return _nothing_to_find(completion, truth)
    found = _scored(completion, truth).matches
    return float(np.mean(found)) if found else 0.0


def duplicate_penalty(completion: str, truth: GroundTruth) -> float:
    """Minus the share of predictions that repeat an earlier one (same label, IoU >= 0.7)."""
    dets = predicted(completion)
    if len(dets) < 2:
        return 0.0
    return -_repeats(dets, truth.size) / len(dets)


def _repeats(dets: Sequence[GeoObject], size: tuple[float, float] | None) -> int:
    """How many of `dets` repeat an earlier one (same label, IoU >= `DUPLICATE_IOU`)."""
    codes = _label_codes(dets)[0]
    if all(kinds.get(o.kind).axis_aligned for o in dets):  # box IoU is one numpy expression: every pair at once
        ious = _label_iou(dets, dets, size)
        return int(np.tril(ious >= DUPLICATE_IOU, k=-1).any(axis=1).sum())
    # Polygon IoU costs a clipping per pair: each prediction is compared with the earlier ones of its label, those
    # whose bounds overlap its own most first, until one repeats it (a degenerate generation's repeats are found
    # at the first try; only a prediction that repeats nothing is compared with every earlier one).
    bounds = np.array([kinds.get(o.kind).xyxy(np.asarray([o.points], dtype=np.float64))[0] for o in dets])
    repeats = 0
    for i in range(1, len(dets)):
        earlier = np.flatnonzero(codes[:i] == codes[i])
        if not len(earlier):
            continue
        low, high = np.maximum(bounds[earlier, :2], bounds[i, :2]), np.minimum(bounds[earlier, 2:], bounds[i, 2:])
        shared = np.prod(np.clip(high - low, 0, None), axis=1)
        order = earlier[np.argsort(-shared, kind="stable")]
        for chunk in (order[:8], order[8:]):
            if len(chunk) and (pairwise_iou([dets[i]], [dets[j] for j in chunk], size=size)[0] >= DUPLICATE_IOU).any():
                repeats += 1
                break
    return repeats


def count_penalty(completion: str, truth: GroundTruth) -> float:
    """Minus |predicted - true| / max(true, 1), floored at -1: too many or too few objects."""
    return 0.0 - min(1.0, abs(len(scored(completion, truth)) - len(truth.objects)) / max(len(truth.objects), 1))


def ap50_reward(completion: str, truth: GroundTruth) -> float:
    """AP at IoU 0.5 of this answer alone (mean over the labels), by the project's evaluation
    (`src.evaluation.metrics.evaluate_images` on the one image), predictions scored 1.0 in answer order."""
    dets = scored(completion, truth)
    if not truth.objects:
        return _nothing_to_find(completion, truth)
    if not dets:
        return 0.0
    image = ImagePair("answer", "answer", dets, truth.objects, np.zeros(len(truth.objects), dtype=bool),
                      size=truth.size)
    return float(evaluate_images([image])["mean_over_descs"]["AP50"] or 0.0)


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
