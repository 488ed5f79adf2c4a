"""Qwen3-VL's answer format, in one place: writing it (training targets), reading it back (predictions,
health checks) and finding each entry in the text (per-object scores).

Written: one JSON line, `[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}, {"quad": [...], "label": "..."}]`
(each entry keyed by its geometry kind's key, `src/datasets/kinds/`: also `point_2d`, `polygon`),
coordinates in `emit_norm` space of each record's original image, objects in reading order (top edge,
then left edge, then label) or as given; with several images per turn each entry starts with
`"image": k`. Ignore regions (`"ignore": true` in the contract) are never written.

Which objects an answer holds, in which space and order, is the answer codec's
(`src/datasets/builders/codec.py`, owned by each builder): it gives the objects and this module writes each one
(`answer_entry`, `dump_answer`) and reads the text back (`parse_answer`).

Read back: Qwen3-VL JSON (fenced or not), the legacy Qwen token form, truncated output, junk.

Two answer formats are read:

* ``json``: a JSON list of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` /
  ``{"quad": [x1, y1, ..., x4, y4], "label": ...}`` / ``{"point_2d": [x, y], "label": ...}`` /
  ``{"polygon": [x1, y1, ..., xN, yN], "label": ...}`` entries (every kind of the registry), bare or inside
  ```json fences (Qwen3-VL);
* ``legacy``: the Qwen2-VL special-token form
  ``<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`` and
  ``<|quad_start|>(x1,y1),...,(x4,y4)<|quad_end|>`` (also the Qwen-VL spelling ``<ref>..</ref><box>..</box>``).

A parse never fails silently: the result says how many entries were unusable and why the rest
was not read, so evaluation can count failures instead of treating them as empty answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from src.datasets import kinds
from src.datasets.objects import GeoObject

ANSWER_VERSION = 3
"""Raised whenever the same record gets another answer text: 2 (ties on the grid round to even, as ms-swift;
ignore regions left out), 3 (a box whose edges round to one grid value is written one step wide). A pre-encoded
cache built under another version is stale (src/datasets/cache.py)."""

FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL)

AnswerFormat = Literal["json", "legacy", "unknown"]

# Legacy spans, both spellings: Qwen2-VL special tokens and Qwen-VL tags, for every kind that has a token
# (`GeometryKind.legacy_token`: box, quad). Group names say what was read.
_LEGACY_KINDS = {k.legacy_token: k.key for k in kinds.KINDS.values() if k.legacy_token}
_LEGACY_SPAN_RE = re.compile(
    r"<\|object_ref_start\|>(?P<ref>.*?)<\|object_ref_end\|>"
    r"|<ref>(?P<ref_v1>.*?)</ref>"
    + "".join(rf"|<\|{t}_start\|>(?P<{t}>.*?)<\|{t}_end\|>|<{t}>(?P<{t}_v1>.*?)</{t}>" for t in _LEGACY_KINDS),
    re.DOTALL,
)
_LEGACY_OPEN_RE = re.compile(r"<\|(?:object_ref|" + "|".join(_LEGACY_KINDS) + r")_start\|>|<(?:ref|"
                             + "|".join(_LEGACY_KINDS) + ")>")
_POINT_RE = re.compile(r"\(\s*([-+]?\d+(?:\.\d+)?)\s*,\s*([-+]?\d+(?:\.\d+)?)\s*\)")
# What may sit between two point tuples (or between legacy spans) without being junk.
_SEPARATORS_RE = re.compile(r"[\s,;]*")


# A leading reasoning block, which Qwen3.5's template puts before every answer: not part of the answer.
_THINKING = re.compile(r"\A\s*<think>.*?</think>", re.DOTALL)


# ---------------------------------------------------------------------------- writing


def _bounds(obj: GeoObject) -> tuple[float, float]:
    xs, ys = obj.points[0::2], obj.points[1::2]
    return min(ys), min(xs)


def order_objects(objects: Sequence[GeoObject], order: str) -> list[GeoObject]:
    """Objects in answer order: "reading" (top, then left, then label) or "given" (as in the file)."""
    if order == "given":
        return list(objects)
    if order == "reading":
        return sorted(objects, key=lambda o: (*_bounds(o), o.desc))
    raise ValueError(f"unknown object order {order!r}; valid: reading, given")


def answer_entry(kind: str, values: Sequence[float], label: str, image: int | None = None) -> dict[str, Any]:
    """One entry of the answer's JSON list for an object in the answer's space (an object record's `kind`,
    `points`, `desc`, `image`): ``"image": k`` first when it names its image (several images in the turn), then
    the kind's key with the values, then ``label``."""
    entry: dict[str, Any] = {kind: list(values), "label": label}
    return {"image": image, **entry} if image is not None else entry


def dump_answer(entries: list[dict[str, Any]]) -> str:
    """Qwen3-VL's JSON style: one line, `", "` and `": "` separators, non-ASCII kept."""
    return json.dumps(entries, ensure_ascii=False, separators=(", ", ": "))


def answer_offset(text: str) -> int:
    """Where the answer proper starts in a model's text: after a leading ``<think>...</think>`` block, else 0."""
    thinking = _THINKING.match(text)
    return thinking.end() if thinking else 0


# ---------------------------------------------------------------------------- reading


@dataclass(slots=True)
class ParsedAnswer:
    """Objects read from an answer (`kind`, `coords` in the answer's space, `label`, `image` if given)."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # why (part of) the answer could not be read; None when all of it was
    truncated: bool = False
    format: AnswerFormat = "unknown"
    """Which format the answer was read as (``"unknown"``: neither was recognised)."""
    bad_entries: int = 0
    """Entries that were read but are unusable (missing/extra geometry, wrong number of coordinates)."""
    junk_chars: int = 0
    """Non-blank characters outside the recognised answer (prose around it); informational, not an error."""
    spans: list[tuple[int, int]] = field(default_factory=list)
    """Per object (in `objects`' order), where its entry sits in the text: ``(start, end)`` character offsets,
    from the entry's first character (its ``{``, or its legacy box/quad token) to the start of the next entry,
    read or not (a malformed entry and the cut-off tail of a truncated answer end the object before them), or
    to the end of the text. What the per-object scores are read from (`src.inference.scoring`)."""


def detect_format(text: str) -> AnswerFormat:
    """``"legacy"`` when the text holds a legacy grounding token and no JSON list precedes it,
    ``"json"`` when it holds a ``[``, else ``"unknown"``."""
    legacy = _LEGACY_OPEN_RE.search(text)
    bracket = text.find("[")
    if legacy and (bracket < 0 or legacy.start() < bracket):
        return "legacy"
    return "json" if bracket >= 0 else "unknown"


def _strip_fence(text: str) -> tuple[int, int, int]:
    """(where the body starts in `text`, where it ends, non-blank characters outside the fence)."""
    match = FENCE_RE.search(text)
    if not match:
        return 0, len(text), 0
    outside = text[: match.start()] + text[match.end():]
    return match.start(1), match.end(1), len("".join(outside.split()))


def _entry_to_object(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        return None
    present = [k for k in kinds.KEYS if k in entry]
    if len(present) != 1:
        return None
    coords = kinds.get(present[0]).read_values(entry[present[0]])
    if coords is None:
        return None
    label = entry.get("label")
    # A null label is no label ("None" would be a class of its own); any other value reads as its text.
    obj = {"kind": present[0], "coords": coords, "label": "" if label is None else str(label)}
    image = entry.get("image")
    if type(image) is int:  # not a bool: `true` names no image
        obj["image"] = image
    return obj


# Where the answer's list opens: a `[` whose first item is an entry (or that closes at once), so that prose
# before it holding a `[` ("the objects [all of them]: [...]") is not read as the list.
_LIST_OPEN_RE = re.compile(r"\[(?=\s*[{\]])")
# An entry written without the list around it (`{"bbox_2d": [...], "label": "..."}`, one object asked for).
_BARE_ENTRY_RE = re.compile(r'\{(?=\s*"(?:image|label|' + "|".join(map(re.escape, kinds.KEYS)) + ')")')


def _complete_entries(text: str, start: int, end: int) -> tuple[list[tuple[Any, int]], list[int], bool, int, int]:
    """Decode `{...}` entries one by one from the JSON list in ``text[start:end]``, which may be cut off.

    The list is the first `[` that opens on an entry (or closes at once), else the first `[`; without one, entries
    written bare (no list around them) are read. Returns (each decoded entry with its offset in `text`, the offset
    of every entry read or not (a cut-off or unreadable tail included), truncated, unreadable entries (json's own
    limits: nesting past its recursion limit, an integer past int()'s digit limit; never raised), non-blank
    characters before the list and after its end)."""
    decoder = json.JSONDecoder()
    body = text[:end]
    opened = _LIST_OPEN_RE.search(body, start)
    bare = None if opened else _BARE_ENTRY_RE.search(body, start)
    first = opened.start() if opened else bare.start() if bare else body.find("[", start)
    if first < 0:
        return [], [], True, 0, len("".join(body[start:].split()))
    junk = len("".join(body[start:first].split()))
    pos = first if bare else first + 1
    entries: list[tuple[Any, int]] = []
    starts: list[int] = []
    while True:
        while pos < end and body[pos] in " \t\r\n,":
            pos += 1
        if pos >= end:
            return entries, starts, not bare, 0, junk  # a list never closed was cut off; bare entries just end
        if not bare and body[pos] == "]":
            return entries, starts, False, 0, junk + len("".join(body[pos + 1:].split()))
        if bare and body[pos] != "{":
            return entries, starts, False, 0, junk + len("".join(body[pos:].split()))
        starts.append(pos)
        try:
            entry, after = decoder.raw_decode(body, pos)
        except json.JSONDecodeError:
            return entries, starts, True, 0, junk
        except (RecursionError, ValueError):  # readable as JSON by no reader of ours: one unusable entry
            return entries, starts, False, 1, junk + len("".join(body[pos:].split())) - 1
        entries.append((entry, pos))
        pos = after


def _spans(objects_at: list[int], starts: list[int], end: int) -> list[tuple[int, int]]:
    """(start, end) of each object whose entry starts at `objects_at`: up to the next of every entry's `starts`."""
    bounds = sorted(set(starts))
    spans = []
    for at in objects_at:
        later = [b for b in bounds if b > at]
        spans.append((at, later[0] if later else end))
    return spans


def _legacy_points(span: str, kind: str) -> list[float] | None:
    """Coordinates of ``(x,y),(x,y)...`` when the span is exactly that with the right count and nothing the
    kind calls malformed (a box with swapped corners: `GeometryKind.read_problem`), else None."""
    points = _POINT_RE.findall(span)
    leftover = _SEPARATORS_RE.sub("", _POINT_RE.sub("", span))
    if leftover or not kinds.get(kind).count_ok(2 * len(points)):
        return None
    coords = [float(v) for xy in points for v in xy]
    return None if kinds.get(kind).read_problem(coords) else coords


def _parse_legacy(text: str, offset: int, result: ParsedAnswer) -> None:
    # A ref names every box/quad that follows it until the next ref (Qwen2-VL writes one ref
    # before a run of boxes for "all the dogs").
    label, pos, junk, ref_at = "", 0, 0, None
    objects_at: list[int] = []
    starts: list[int] = []
    for match in _LEGACY_SPAN_RE.finditer(text, offset):
        between = _SEPARATORS_RE.sub("", text[max(pos, offset):match.start()])
        junk += len(between)
        pos = match.end()
        group = match.lastgroup or ""
        value = match.group(group)
        if group.startswith("ref"):
            label, ref_at = value.strip(), match.start()
            continue
        kind = _LEGACY_KINDS[group.removesuffix("_v1")]
        coords = _legacy_points(value, kind)
        # The entry opens at the ref right before its box (the label's tokens are the object's), else at the box.
        at = match.start() if ref_at is None or between else ref_at
        ref_at = None
        starts.append(at)
        if coords is None:
            result.bad_entries += 1
        else:
            result.objects.append({"kind": kind, "coords": coords, "label": label})
            objects_at.append(at)
    tail = text[pos:]
    opened = _LEGACY_OPEN_RE.search(tail)
    # A start token with no end token after the last complete span: generation stopped mid-entry.
    result.truncated = opened is not None
    if opened:
        starts.append(pos + opened.start())
    junk += len(_SEPARATORS_RE.sub("", tail[: opened.start()] if opened else tail))
    result.junk_chars = junk
    result.spans = _spans(objects_at, starts, len(text))


def parse_answer(text: str) -> ParsedAnswer:
    """Read every complete object from a model answer, in either format (see :func:`detect_format`).

    JSON: a bare list or one inside ```json fences (the first `[` that opens on an entry: prose before it may
    hold brackets), or entries written without a list; the complete entries of a truncated list are kept. An
    entry json cannot read at all (nesting past its recursion limit, an integer past its digit limit) or with a
    non-finite coordinate is a bad entry: this never raises. Legacy: every complete ``box``/``quad`` span,
    labelled by the ref before it; a span cut off by the end of the text marks the answer truncated. Either way
    an entry with a bad geometry is skipped and counted in ``bad_entries``, and ``error`` is None only when the
    whole answer was read: it is set for junk (no objects found), truncation and bad entries. A leading
    reasoning block (``<think>...</think>``, which Qwen3.5's template puts before every answer) is not part of
    the answer: it is dropped before reading.
    """
    offset = answer_offset(text)
    fmt = detect_format(text[offset:])
    result = ParsedAnswer(format=fmt)
    if fmt == "legacy":
        _parse_legacy(text, offset, result)
    elif fmt == "unknown":
        result.junk_chars = len("".join(text[offset:].split()))
    else:
        body_start, body_end, outside = _strip_fence(text[offset:])
        entries, starts, result.truncated, unreadable, junk = _complete_entries(text, offset + body_start,
                                                                               offset + body_end)
        result.junk_chars = outside + junk
        result.bad_entries = unreadable
        objects_at = []
        for entry, at in entries:
            obj = _entry_to_object(entry)
            if obj is None:
                result.bad_entries += 1
            else:
                result.objects.append(obj)
                objects_at.append(at)
        result.spans = _spans(objects_at, starts, len(text))
    problems = []
    if fmt == "unknown":
        problems.append("no JSON list or grounding tokens found")
    elif result.truncated:
        problems.append("answer cut off")
    if result.bad_entries:
        n = result.bad_entries
        problems.append(f"{n} entr{'y' if n == 1 else 'ies'} without a valid {'/'.join(kinds.KEYS)}")
    result.error = "; ".join(problems) or None
    return result
