"""The shipped preprocessor: `images_per_user_turn` records per user turn, grouped in an order fixed by a seed."""

from __future__ import annotations

import random
from collections.abc import Sequence

from src.datasets.builders import BaseBuilder
from src.datasets.contract import Record

from .base import BasePreprocessor, Sample


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


class OneRecordSamples(Sequence[Sample]):
    """`([record], {})` for each record, made when asked for: the samples of one record per turn and one
    question per record, without holding a list of them (the records may be a lazy RecordTable too)."""

    def __init__(self, records: Sequence[Record]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):  # noqa: ANN001 - int or slice, as a list takes
        if isinstance(index, slice):
            return [([r], {}) for r in self.records[index]]
        return [self.records[index]], {}


class GroupingPreprocessor(BasePreprocessor):
    """One record per user turn, or `images_per_user_turn` of them shuffled together by `seed`."""

    def __init__(self, builder: BaseBuilder, *, images_per_user_turn: int, seed: int):
        super().__init__(builder)
        self.images_per_user_turn = images_per_user_turn
        self.seed = seed

    def groups(self, records: Sequence[Record]) -> list[list[Record]]:
        return group_records(records, self.images_per_user_turn, self.seed)

    def samples(self, records: Sequence[Record]) -> Sequence[Sample]:
        """As `BasePreprocessor.samples`; lazily for one record per turn and one question per group."""
        if self.images_per_user_turn == 1 and not self.builder.asks_several_questions:
            return OneRecordSamples(records)
        return super().samples(records)
