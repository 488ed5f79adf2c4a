"""Dense grounding: every object of every record, in Qwen3-VL's JSON answer, in `emit_norm` coordinates."""

from __future__ import annotations

from collections.abc import Sequence

from src.datasets.contract import Record

from .base import BaseBuilder


class GroundingBuilder(BaseBuilder):
    """Every object of the group; with several records per turn each entry says which image (`"image": k`)."""

    def answer(self, records: Sequence[Record]) -> str:
        return self.codec.write(records)
