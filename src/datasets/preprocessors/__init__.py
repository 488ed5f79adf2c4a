"""Preprocessors: a split's records -> samples (records of one user turn + the question asked).

Subclass `BasePreprocessor` (implement `groups`) in a module of this package; `src/datasets/plan.py`
builds the one a config asks for.
"""

from .base import BasePreprocessor, Sample
from .grouping import GroupingPreprocessor, group_records

__all__ = ["BasePreprocessor", "GroupingPreprocessor", "Sample", "group_records"]
