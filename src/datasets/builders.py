"""Builders and preprocessors: validated records -> ms-swift rows (`messages` + `images`).

A row is one conversation: a system turn, a user turn holding `images_per_user_turn` images and the
scheme's question, and the assistant's answer in Qwen3-VL's native JSON,
`[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}, {"quad": [x1, y1, ..., x4, y4], "label": "..."}]`,
with coordinates in `emit_norm` space relative to each record's original image. The pixel
geometry rides along on the row (`geometry_px`, JSON text) so checks can compare the encoded
labels with it, and `source` names the records' file:line.

Object order ("reading"): by the top edge of each object's bounding box, then its left edge, then
the label, so the same record always gives the same answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from src.config.prompts import PromptScheme

from .contract import GroundingObject, Record
from .geometry import pixel_to_norm

ROW_GEOMETRY_KEY = "geometry_px"
ROW_SOURCE_KEY = "source"


def _bounds(obj: GroundingObject) -> tuple[float, float]:
    xs, ys = obj.points[0::2], obj.points[1::2]
    return min(ys), min(xs)


def order_objects(objects: Sequence[GroundingObject], order: str) -> list[GroundingObject]:
    """Objects in answer order: "reading" (top, then left, then label) or "given" (as in the file)."""
    if order == "given":
        return list(objects)
    if order == "reading":
        return sorted(objects, key=lambda o: (*_bounds(o), o.desc))
    raise ValueError(f"unknown object order {order!r}; valid: reading, given")


def answer_entries(record: Record, emit_norm: str, order: str, image_index: int | None) -> list[dict[str, Any]]:
    """The answer's JSON entries for one record: geometry in `emit_norm`, label, image index if grouped."""
    entries = []
    for obj in order_objects(record.objects, order):
        coords = pixel_to_norm(np.asarray(obj.points, dtype=float), record.width, record.height, emit_norm)
        entry: dict[str, Any] = {obj.kind: [int(v) for v in np.asarray(coords).ravel()], "label": obj.desc}
        if image_index is not None:
            entry = {"image": image_index, **entry}
        entries.append(entry)
    return entries


def dump_answer(entries: list[dict[str, Any]]) -> str:
    """Qwen3-VL's JSON style: one line, `", "` and `": "` separators, non-ASCII kept."""
    return json.dumps(entries, ensure_ascii=False, separators=(", ", ": "))


def geometry_payload(records: Sequence[Record]) -> str:
    """The pixel geometry of a row's records as JSON text (image index, size, kind, points, desc)."""
    return json.dumps([
        {"image": i, "width": r.width, "height": r.height,
         "objects": [{"kind": o.kind, "points": list(o.points), "desc": o.desc} for o in r.objects]}
        for i, r in enumerate(records, start=1)
    ], ensure_ascii=False)


class BaseBuilder:
    """Builds ms-swift rows from a group of records. Subclasses write `answer`.

    A group gives one row per entry of `focuses(records)`: `{}` (one row) for most schemes; the
    description-grounding scheme asks about one description at a time.
    """

    def __init__(self, scheme: PromptScheme):
        self.scheme = scheme

    def focuses(self, records: Sequence[Record]) -> list[dict[str, str]]:
        """The questions to ask about this group: keyword arguments for `build`, one row each."""
        return [{}]

    def user_text(self, records: Sequence[Record], **focus: str) -> str:
        """The user turn: one `<image>` per record, then the scheme's question."""
        text = self.scheme.user.replace("{n_images}", str(len(records)))
        for key, value in focus.items():
            text = text.replace("{" + key + "}", value)
        return "<image>" * len(records) + text

    def answer(self, records: Sequence[Record]) -> str:
        raise NotImplementedError

    def focused(self, records: Sequence[Record], **focus: str) -> list[Record]:
        """The records as the answer sees them (all objects, unless a subclass narrows them)."""
        return list(records)

    def build(self, records: Sequence[Record], *, with_answer: bool = True, **focus: str) -> dict[str, Any]:
        """The row: messages (system, user, assistant unless `with_answer=False`), images and checks data."""
        records = self.focused(records, **focus)
        messages = [{"role": "system", "content": self.scheme.system},
                    {"role": "user", "content": self.user_text(records, **focus)}]
        if with_answer:
            messages.append({"role": "assistant", "content": self.answer(records)})
        return {
            "messages": messages,
            "images": [r.image for r in records],
            ROW_GEOMETRY_KEY: geometry_payload(records),
            ROW_SOURCE_KEY: ", ".join(f"{r.source.file}:{r.source.line}" for r in records),
        }


class GroundingBuilder(BaseBuilder):
    """Dense grounding: every object of every record, in Qwen3-VL's JSON, in `emit_norm` coordinates."""

    def __init__(self, scheme: PromptScheme, emit_norm: str, object_order: str):
        super().__init__(scheme)
        self.emit_norm = emit_norm
        self.object_order = object_order

    def answer(self, records: Sequence[Record]) -> str:
        grouped = len(records) > 1
        entries = []
        for index, record in enumerate(records, start=1):
            entries += answer_entries(record, self.emit_norm, self.object_order, index if grouped else None)
        return dump_answer(entries)


class DescriptionBuilder(GroundingBuilder):
    """Grounding a given description: one row per distinct `desc` of the group (sorted), whose answer
    holds only the objects with that description."""

    def focuses(self, records: Sequence[Record]) -> list[dict[str, str]]:
        return [{"desc": d} for d in sorted({o.desc for r in records for o in r.objects})]

    def focused(self, records: Sequence[Record], **focus: str) -> list[Record]:
        if "desc" not in focus:
            raise ValueError("the grounding scheme asks about one description: build(records, desc=...)")
        return [replace(r, objects=tuple(o for o in r.objects if o.desc == focus["desc"])) for r in records]


class SummaryBuilder(BaseBuilder):
    """Summary mode: the answer is each record's `summary` text."""

    def answer(self, records: Sequence[Record]) -> str:
        missing = [f"{r.source.file}:{r.source.line}" for r in records if not r.summary]
        if missing:
            raise ValueError(f"summary scheme needs `summary` on every record; missing at {', '.join(missing)}")
        return "\n".join(r.summary or "" for r in records)


def make_builder(scheme: PromptScheme, emit_norm: str, object_order: str) -> BaseBuilder:
    """The builder for a prompt scheme's target."""
    if scheme.target == "summary":
        return SummaryBuilder(scheme)
    if scheme.target == "objects":
        return GroundingBuilder(scheme, emit_norm, object_order)
    if scheme.target == "matching":
        return DescriptionBuilder(scheme, emit_norm, object_order)
    raise ValueError(f"prompt scheme {scheme.name!r} has an unknown target {scheme.target!r}")


def group_records(records: Sequence[Record], per_turn: int, seed: int) -> list[list[Record]]:
    """Records grouped `per_turn` at a time ("dynamic pairing"), shuffled deterministically by `seed`.

    With `per_turn == 1` the order is kept. The last group may be smaller. No record is lost.
    """
    if per_turn < 1:
        raise ValueError(f"per_turn must be >= 1, got {per_turn}")
    if per_turn == 1:
        return [[r] for r in records]
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [[records[i] for i in order[k:k + per_turn]] for k in range(0, len(order), per_turn)]


@dataclass(frozen=True, slots=True)
class BasePreprocessor:
    """Turns a split's records into rows: grouping, then the builder."""

    builder: BaseBuilder
    images_per_user_turn: int
    seed: int

    def samples(self, records: Sequence[Record]) -> list[tuple[list[Record], dict[str, str]]]:
        """(records, focus) of every row: the groups, each once per question the builder asks."""
        groups = group_records(records, self.images_per_user_turn, self.seed)
        return [(group, focus) for group in groups for focus in self.builder.focuses(group)]

    def __call__(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        return [self.builder.build(group, **focus) for group, focus in self.samples(records)]
