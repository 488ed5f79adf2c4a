"""Loading a config for a run: the offline variables, the config layer's checks, then the checks that
need the data layer (augmentation operations, a pre-encoded cache), then the config's `env:`.

Every entry point (training, inference, the data tools) loads its config through `load_config_for_run`.
The config layer itself (src/config/) never imports the data layer: the rules that need it live here.
"""

from __future__ import annotations

import os
from pathlib import Path

from src.config import ConfigError, ProjectConfig, load_project_config
from src.config.offline import apply_offline_env
from src.config.prompts import PROMPT_SCHEMES
from src.config.rules import where
from src.datasets.augment import parse_augment_ops
from src.datasets.cache import cache_problems
from src.datasets.template_tokens import model_tokens, text_problem


def cache_rule_problems(cfg: ProjectConfig) -> list[str]:
    if not cfg.custom.cached_dataset:
        return []
    if cfg.custom.augment_prob > 0:
        return [f"{where(cfg, 'custom.cached_dataset')}a cached dataset holds fixed encodings: it cannot be "
                f"augmented; set custom.augment_prob: 0 or custom.cached_dataset: null"]
    problems = cache_problems(cfg, Path(cfg.custom.cached_dataset))
    return [f"{where(cfg, 'custom.cached_dataset')}{p}" for p in problems]


def augment_rule_problems(cfg: ProjectConfig) -> list[str]:
    try:
        ops = parse_augment_ops(cfg.custom.augment)
    except ValueError as err:
        return [f"{where(cfg, 'custom.augment')}{err}"]
    if cfg.custom.augment_prob <= 0 or not ops:
        if cfg.custom.augment_prob > 0:
            return [f"{where(cfg, 'custom.augment_prob')}`custom.augment_prob` is {cfg.custom.augment_prob} but "
                    f"`custom.augment` lists no operation: add some, or set augment_prob: 0"]
        return []
    if PROMPT_SCHEMES[cfg.prompts.scheme].builder == "summary":
        return [f"{where(cfg, 'custom.augment_prob')}the summary scheme trains on each record's `summary` text, "
                f"which augmentation cannot update (a crop can drop an object the summary names): set "
                f"augment_prob: 0"]
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


def data_rule_problems(cfg: ProjectConfig) -> list[str]:
    """Every problem of `cfg` that needs the data layer to see (augmentation, cached dataset, template tokens in
    the prompts)."""
    return augment_rule_problems(cfg) + cache_rule_problems(cfg) + prompt_token_problems(cfg)


def load_config_for_run(config, base_config=None, *, check_paths: bool = True, on_cpu: bool = False) -> ProjectConfig:
    """Set the offline variables, load and check `config` (with the CPU overlay when `on_cpu`), check what
    needs the data layer, then apply its `env:` section; return the config.

    Every entry point calls this before ms-swift is imported, because ms-swift and qwen_vl_utils read
    some of these variables (IMAGE_MAX_TOKEN_NUM, ...) when they load. Raises ConfigError.
    """
    apply_offline_env()
    cfg = load_project_config(config, base_config, check_paths=check_paths, on_cpu=on_cpu)
    problems = data_rule_problems(cfg)
    if problems:
        raise ConfigError(problems)
    os.environ.update(cfg.env)
    return cfg
