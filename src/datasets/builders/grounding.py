"""Dense grounding: every object of every record, in Qwen3-VL's JSON answer, in `emit_norm` coordinates."""

from __future__ import annotations

from collections.abc import Sequence

from src.datasets.answer import answer_entries, dump_answer
from src.datasets.contract import Record

from .base import BaseBuilder


class GroundingBuilder(BaseBuilder):
    """Every object of the group; with several records per turn each entry says which image (`"image": k`)."""

    def answer(self, records: Sequence[Record]) -> str:
        grouped = len(records) > 1
        entries = []
        for index, record in enumerate(records, start=1):
            entries += answer_entries(record, self.emit_norm, self.object_order, index if grouped else None)
        return dump_answer(entries)
