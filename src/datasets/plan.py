"""From a validated config to the rows a run trains on: load each split, apply the policy, build rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from src.config import ProjectConfig
from src.config.prompts import get_prompt_scheme
from src.datasets.builders import BaseBuilder, make_builder
from src.datasets.contract import Record
from src.datasets.loading import LoadedSplit, load_split
from src.datasets.preprocessors import BasePreprocessor, GroupingPreprocessor
from src.datasets.verdicts import VerdictStore


@dataclass(slots=True)
class DataPlan:
    """The loaded splits, their samples (records of one user turn + the question asked), and their rows.

    The rows (image paths, answers) are built eagerly so that every record is checked before a run
    starts; the training dataset rebuilds rows from the samples on the fly (augmentation, PIL images).
    """

    builder: BaseBuilder
    splits: list[LoadedSplit] = field(default_factory=list)
    train_samples: list[tuple[list[Record], dict[str, str]]] = field(default_factory=list)  # (records, focus)
    val_samples: list[tuple[list[Record], dict[str, str]]] = field(default_factory=list)
    train_rows: list[dict[str, Any]] = field(default_factory=list)
    val_rows: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """Records kept and skipped per split, rows built, and each skipped record's problems."""
        lines = []
        for split in self.splits:
            reused = " (stored verdict: unchanged since validated)" if split.from_store else ""
            lines.append(f"{split.path}: {len(split.records)} records kept, {len(split.skipped_lines)} skipped"
                         f"{reused}")
            lines += [f"  skipped {p}" for p in split.problems]
        lines.append(f"rows: {len(self.train_rows)} train, {len(self.val_rows)} val")
        return "\n".join(lines)


def data_seed(cfg: ProjectConfig) -> int:
    """The seed of grouping and augmentation draws: `training.data_seed` (ms-swift's default 42 if unset)."""
    return int(cfg.swift.get("data_seed", 42))


def make_preprocessor(cfg: ProjectConfig) -> BasePreprocessor:
    """The preprocessor (prompt scheme, builder, grouping) a config describes; shared by training and inference."""
    scheme = get_prompt_scheme(cfg.prompts.scheme, system=cfg.prompts.system, user=cfg.prompts.user)
    builder = make_builder(scheme, cfg.custom.emit_norm, cfg.custom.object_order)
    return GroupingPreprocessor(builder, images_per_user_turn=cfg.custom.images_per_user_turn, seed=data_seed(cfg))


def plan_data(cfg: ProjectConfig, *, store: VerdictStore | None = None, revalidate: bool = False) -> DataPlan:
    """Load and validate every record the config names and build the rows. Raises DataError under `error`.

    With a verdict store, unchanged files are not validated again (src/datasets/verdicts.py)."""
    preprocessor = make_preprocessor(cfg)
    plan = DataPlan(builder=preprocessor.builder)
    train = load_split(cfg.custom.train_jsonl, cfg.custom.bad_records, store=store, revalidate=revalidate)
    plan.splits.append(train)
    plan.train_samples = preprocessor.samples(train.records)
    plan.train_rows = [plan.builder.build(g, **focus) for g, focus in plan.train_samples]
    if cfg.custom.val_jsonl:
        val = load_split(cfg.custom.val_jsonl, cfg.custom.bad_records, store=store, revalidate=revalidate)
        plan.splits.append(val)
        plan.val_samples = preprocessor.samples(val.records)
        plan.val_rows = [plan.builder.build(g, **focus) for g, focus in plan.val_samples]
    return plan
