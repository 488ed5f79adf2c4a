"""Loading a config for a run, the data layer's part: the offline variables, the config layer's checks, then
what needs the data layer (the preprocessor and its builder, the augmentation operations parsed once, a
pre-encoded cache, template tokens in the prompts), then the config's `env:`.

`load_run` does it and returns the pieces it derived, so nothing derives them again. The one step that
resolves a run for every entry (training, GRPO, render, cache, rows, infer) is `resolve_run`
(src/training/resolve.py): it calls `load_run` with the checks of the layers above (stage 3's) and adds the
image settings and ms-swift's arguments. The config layer itself (src/config/) never imports the data layer:
the rules that need it live here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from src.config import ConfigError, ProjectConfig, load_project_config
from src.config.offline import apply_offline_env
from src.config.schema import where
from src.datasets.augment import AugmentOp, parse_augment_ops
from src.datasets.builders import BaseBuilder
from src.datasets.cache import cache_problems
from src.datasets.plan import make_preprocessor
from src.datasets.preprocessors import BasePreprocessor
from src.datasets.template_tokens import model_tokens, text_problem


@dataclass(frozen=True, slots=True)
class LoadedRun:
    """A config checked by every rule below the training layer, with what the data layer derived from it once."""

    cfg: ProjectConfig
    preprocessor: BasePreprocessor  # the prompt scheme's builder and the grouping into user turns
    augment_ops: list[AugmentOp]  # `custom.augment`, parsed (the list is empty when it does not parse)

    @property
    def builder(self) -> BaseBuilder:
        """The builder that writes the answers (and asks the questions) of this config's prompt scheme."""
        return self.preprocessor.builder


def cache_rule_problems(cfg: ProjectConfig) -> list[str]:
    if not cfg.custom.cached_dataset:
        return []
    if cfg.custom.augment_prob > 0:
        return [f"{where(cfg, 'custom.cached_dataset')}a cached dataset holds fixed encodings: it cannot be "
                f"augmented; set custom.augment_prob: 0 or custom.cached_dataset: null"]
    problems = cache_problems(cfg, Path(cfg.custom.cached_dataset))
    return [f"{where(cfg, 'custom.cached_dataset')}{p}" for p in problems]


def augment_ops_of(cfg: ProjectConfig) -> tuple[list[AugmentOp], list[str]]:
    """`custom.augment` parsed once: (the operations, []) or ([], the problem naming the file:line and op)."""
    try:
        return parse_augment_ops(cfg.custom.augment), []
    except ValueError as err:
        return [], [f"{where(cfg, 'custom.augment')}{err}"]


def augment_rule_problems(cfg: ProjectConfig, ops: list[AugmentOp], builder: BaseBuilder) -> list[str]:
    """Why the parsed `ops` cannot augment this config's training (empty when they can, or when it does not
    augment)."""
    if cfg.custom.augment_prob <= 0 or not ops:
        if cfg.custom.augment_prob > 0 and not cfg.custom.augment:
            return [f"{where(cfg, 'custom.augment_prob')}`custom.augment_prob` is {cfg.custom.augment_prob} but "
                    f"`custom.augment` lists no operation: add some, or set augment_prob: 0"]
        return []
    if not builder.answers_with_geometry:  # an answer without coordinates cannot follow a crop or a flip
        return [f"{where(cfg, 'custom.augment_prob')}the {cfg.prompts.scheme} scheme trains on each record's "
                f"`summary` text, which augmentation cannot update (a crop can drop an object the summary names): "
                f"set augment_prob: 0"]
    swift = cfg.swift
    if swift.get("lazy_tokenize") is False or swift.get("packing") or swift.get("streaming"):
        return [f"{where(cfg, 'custom.augment_prob')}augmentation draws per sample and needs lazy tokenisation: "
                f"set training.lazy_tokenize: true and leave packing/streaming off, or set augment_prob: 0"]
    if (swift.get("dataloader_num_workers") or 0) > 0 and swift.get("dataloader_persistent_workers", True):
        return [f"{where(cfg, 'training.dataloader_persistent_workers')}augmentation with dataloader workers "
                f"needs `training.dataloader_persistent_workers: false` (persistent workers never see the new "
                f"epoch, so every epoch would repeat the same draws)"]
    return []


def prompt_token_problems(cfg: ProjectConfig) -> list[str]:
    """Each of `prompts.system` / `prompts.user` holding a token of the model's chat template
    (src/datasets/template_tokens.py): the key, the token and the fix."""
    try:
        tokens = model_tokens(cfg.swift.get("model"))
    except ValueError as err:
        return [f"{where(cfg, 'model.model')}{err}"]
    problems = []
    for key in ("system", "user"):
        text = getattr(cfg.prompts, key)
        found = text_problem(text, tokens) if isinstance(text, str) else None
        if found:
            problems.append(f"{where(cfg, f'prompts.{key}')}`prompts.{key}` {found}")
    return problems


def load_run(config, base_config=None, *, check_paths: bool = True, on_cpu: bool = False,
             more_rules: Callable[[ProjectConfig], list[str]] | None = None) -> LoadedRun:
    """Set the offline variables, load and check `config` (with the CPU overlay when `on_cpu`), derive the
    preprocessor and the augmentation operations once, check what needs the data layer and `more_rules`
    (the checks of a layer above, handed down), then apply the config's `env:` section.

    Every problem found after the config layer's own is raised together as one ConfigError. Runs before
    ms-swift is imported, because ms-swift and qwen_vl_utils read some of the `env:` variables
    (IMAGE_MAX_TOKEN_NUM, ...) when they load.
    """
    apply_offline_env()
    cfg = load_project_config(config, base_config, check_paths=check_paths, on_cpu=on_cpu)
    preprocessor = make_preprocessor(cfg)
    ops, problems = augment_ops_of(cfg)
    problems += augment_rule_problems(cfg, ops, preprocessor.builder) + cache_rule_problems(cfg)
    problems += prompt_token_problems(cfg) + (more_rules(cfg) if more_rules else [])
    if problems:
        raise ConfigError(problems)
    os.environ.update(cfg.env)
    return LoadedRun(cfg=cfg, preprocessor=preprocessor, augment_ops=ops)


def load_config_for_run(config, base_config=None, *, check_paths: bool = True, on_cpu: bool = False) -> ProjectConfig:
    """`load_run(...).cfg`: the config checked by every rule of the data layer, its `env:` applied.

    The entries resolve their run with `resolve_run` (src/training/resolve.py); this is for a caller below
    the training layer that needs the config alone. Raises ConfigError.
    """
    return load_run(config, base_config, check_paths=check_paths, on_cpu=on_cpu).cfg
