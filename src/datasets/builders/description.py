"""Grounding a given description: one row per distinct `desc` of the group, answering with its objects only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

from src.datasets.contract import Record

from .grounding import GroundingBuilder


class DescriptionBuilder(GroundingBuilder):
    """One row per distinct `desc` of the group's objects that are not ignore regions (sorted), whose answer
    holds only the objects with it."""

    asks_several_questions: ClassVar[bool] = True

    def focuses(self, records: Sequence[Record]) -> list[dict[str, str]]:
        return [{"desc": d} for d in sorted({o.desc for r in records for o in r.objects if not o.ignore})]

    def focused(self, records: Sequence[Record], **focus: str) -> list[Record]:
        if "desc" not in focus:
            raise ValueError("the description builder asks about one description: build(records, desc=...)")
        return [replace(r, objects=tuple(o for o in r.objects if o.desc == focus["desc"])) for r in records]
