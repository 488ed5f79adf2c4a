"""Summary mode: the answer is each record's `summary` text (no coordinates)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from src.config import ConfigError
from src.datasets.contract import Record

from .base import BaseBuilder


class SummaryBuilder(BaseBuilder):
    """The records' `summary` texts, one per line; a record without one is an error naming it."""

    answers_with_geometry: ClassVar[bool] = False

    def check_records(self, records: Sequence[Record]) -> None:
        missing = [str(r.source) for r in records if not r.summary]
        if missing:
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
            raise ConfigError(f"summary scheme needs `summary` on every record; missing at {shown}")

    def answer(self, records: Sequence[Record]) -> str:
        self.check_records(records)
        return "\n".join(r.summary or "" for r in records)
