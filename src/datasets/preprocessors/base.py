"""The preprocessor contract: a split's validated records -> the samples (records of one user turn + the
question asked) that a builder turns into rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from src.datasets.builders import BaseBuilder
from src.datasets.contract import Record

Sample = tuple[list[Record], dict[str, str]]  # (records of one user turn, the builder's focus)


class BasePreprocessor:
    """Groups records into user turns (`groups`, what subclasses decide) and asks the builder's questions
    about each group (`samples`); calling it gives the rows."""

    def __init__(self, builder: BaseBuilder):
        self.builder = builder

    def groups(self, records: Sequence[Record]) -> list[list[Record]]:
        """The records of each user turn. Every record must appear in exactly one group."""
        raise NotImplementedError

    def samples(self, records: Sequence[Record]) -> list[Sample]:
        """(records, focus) of every row: the groups, each once per question the builder asks."""
        return [(group, focus) for group in self.groups(records) for focus in self.builder.focuses(group)]

    def __call__(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        return [self.builder.build(group, **focus) for group, focus in self.samples(records)]
