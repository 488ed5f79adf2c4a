"""From a validated config to the rows a run trains on: load each split, apply the policy, build rows."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from src.config import ConfigError, ProjectConfig
from src.config.jsonl import jsonl_files
from src.config.prompts import PROMPT_SCHEMES, get_prompt_scheme
from src.config.rules import evaluation_on
from src.config.schema import where
from src.datasets.builders import BUILDERS, BaseBuilder, make_builder
from src.datasets.columns import RecordSubset, all_ignored
from src.datasets.contract import Record
from src.datasets.loading import LoadedSplit, load_shards
from src.datasets.preprocessors import BasePreprocessor, GroupingPreprocessor
from src.datasets.template_tokens import model_tokens
from src.datasets.verdicts import VerdictStore


@dataclass(slots=True)
class DataPlan:
    """The loaded splits and their samples (records of one user turn + the question asked).

    Rows are not built here: the training dataset builds each one when the dataloader asks for it
    (src/datasets/rows.py), so start-up and memory do not grow with a row per record. What could make
    a row fail to build is checked up front instead (`BaseBuilder.check_records`).
    """

    builder: BaseBuilder
    splits: list[LoadedSplit] = field(default_factory=list)
    train_samples: list[tuple[list[Record], dict[str, str]]] = field(default_factory=list)  # (records, focus)
    val_samples: list[tuple[list[Record], dict[str, str]]] = field(default_factory=list)
    eval_records: list[Record] = field(default_factory=list)  # answered at each evaluation (`eval:`)
    # (split key, source of each record left out of the samples because every object of it is an ignore region)
    all_ignored: list[tuple[str, list[str]]] = field(default_factory=list)

    def first_row(self) -> dict[str, Any] | None:
        """The first training row, built now (for `--debug`), or None without samples."""
        if not self.train_samples:
            return None
        records, focus = self.train_samples[0]
        return self.builder.build(records, **focus)

    def summary(self) -> str:
        """Records kept and skipped per split, samples, and each skipped record's problems."""
        lines = []
        for split in self.splits:
            reused = " (stored verdict: unchanged since validated)" if split.from_store else ""
            lines.append(f"{split.path}: {len(split.records)} records kept, {len(split.skipped_lines)} skipped"
                         f"{reused}")
            lines += [f"  skipped {p}" for p in split.problems]
        for key, sources in self.all_ignored:
            shown = ", ".join(sources[:20]) + (f" and {len(sources) - 20} more" if len(sources) > 20 else "")
            lines.append(f"{key}: {len(sources)} record(s) left out of the samples, all objects ignored "
                         f"(every object is an ignore region): {shown}")
        lines.append(f"samples: {len(self.train_samples)} train, {len(self.val_samples)} val")
        if self.eval_records:
            lines.append(f"evaluation by generation: {len(self.eval_records)} validation records answered at each "
                         f"evaluation, first {self.eval_records[0].source}")
        return "\n".join(lines)


def data_seed(cfg: ProjectConfig) -> int:
    """The seed of grouping and augmentation draws: `training.data_seed` (ms-swift's default 42 if unset)."""
    return int(cfg.swift.get("data_seed", 42))


def answers_with_geometry(scheme: str) -> bool:
    """True when the prompt scheme called `scheme` is answered by a builder whose answers hold coordinates (the
    builder's own `answers_with_geometry`): the one place this is decided."""
    return BUILDERS[PROMPT_SCHEMES[scheme].builder].answers_with_geometry


def make_preprocessor(cfg: ProjectConfig) -> BasePreprocessor:
    """The preprocessor (prompt scheme, builder, grouping) a config describes; shared by training and inference."""
    scheme = get_prompt_scheme(cfg.prompts.scheme, system=cfg.prompts.system, user=cfg.prompts.user)
    builder = make_builder(scheme, cfg.custom.emit_norm, cfg.custom.object_order)
    return GroupingPreprocessor(builder, images_per_user_turn=cfg.custom.images_per_user_turn, seed=data_seed(cfg))


def pick_eval_records(records: Sequence[Record], n: int, pick: str, seed: int) -> list[Record]:
    """The `n` records evaluated each time: the first `n`, or (`pick: sample`) `n` drawn with `seed`, kept in
    file order. The same records on every rank and at every evaluation."""
    if pick == "first":
        return list(records[:n])
    chosen = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in chosen]


def _eval_records(cfg: ProjectConfig, records: Sequence[Record]) -> list[Record]:
    n = cfg.eval.samples
    if not records:
        raise ConfigError(f"{where(cfg, 'eval.samples')}`eval.samples` = {n} but `custom.val_jsonl` holds no valid "
                          f"record to answer: give it records, or set `eval.samples: 0` to turn the evaluation off")
    if n > len(records):
        raise ConfigError(f"{where(cfg, 'eval.samples')}`eval.samples` = {n} is more than the {len(records)} valid "
                          f"records of `custom.val_jsonl`; valid: 0 (off) to {len(records)}")
    return pick_eval_records(records, n, cfg.eval.pick, data_seed(cfg))


def plan_data(cfg: ProjectConfig, *, preprocessor: BasePreprocessor | None = None, store: VerdictStore | None = None,
              revalidate: bool = False) -> DataPlan:
    """Load and validate every record the config names and plan its samples with `preprocessor` (the run's,
    as resolved once; a caller holding only a config gets `make_preprocessor(cfg)`). Raises DataError under
    `error` and ConfigError when the builder cannot answer a record (a summary scheme over records without one).

    With a verdict store, unchanged files are not validated again (src/datasets/verdicts.py)."""
    preprocessor = preprocessor or make_preprocessor(cfg)
    plan = DataPlan(builder=preprocessor.builder)
    for key, value in (("custom.train_jsonl", cfg.custom.train_jsonl), ("custom.val_jsonl", cfg.custom.val_jsonl)):
        if not value:
            continue
        splits, records = load_shards(jsonl_files(value, key), cfg.custom.bad_records, store=store,
                                      revalidate=revalidate, tokens=model_tokens(cfg.swift.get("model")),
                                      check_image="decode" if cfg.custom.decode_images else "header")
        plan.splits += splits
        if key == "custom.train_jsonl" and not len(records):
            skipped = sum(len(split.skipped_lines) for split in splits)
            why = (f"all {skipped} record(s) were invalid and skipped: {splits[0].problems[0]}" if skipped
                   else "the file holds no record (it is empty or only blank lines)")
            raise ConfigError(f"{where(cfg, key)}`{key}` = {', '.join(s.path for s in splits)}: nothing to train on: "
                              f"{why}; add records (`python -m src.datasets validate FILE` checks them), or point "
                              f"`{key}` at the right file")
        plan.builder.check_records(records)
        # An answer for such a record would be `[]`, denying objects its regions hold: it is not trained.
        ignored = all_ignored(records)
        answered = RecordSubset(records, ignored) if len(ignored) else records
        if len(ignored):
            plan.all_ignored.append((key, [str(records[int(i)].source) for i in ignored]))
        if key == "custom.train_jsonl":
            plan.train_samples = preprocessor.samples(answered)
        else:
            plan.val_samples = preprocessor.samples(answered)
            if evaluation_on(cfg):
                plan.eval_records = _eval_records(cfg, records)
    return plan
