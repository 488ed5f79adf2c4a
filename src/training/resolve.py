"""A run resolved once: from a config file to everything a run needs, every rule checked in one step.

`resolve_run` is the one step every entry takes (training and GRPO through src/training/setup.py, the
data tools' render / stats / cache / rows, `src.infer`). Its path goes only downwards: the config layer
loads, merges, type-checks and rule-checks the YAML (src/config/); the data layer derives the preprocessor
(the prompt scheme's builder) and parses the augmentation operations once, and checks what needs it
(src/datasets/run_config.py `load_run`, which also runs the stage-3 checks handed down from here); this
module then reads the image settings from the environment the config's `env:` set and assembles
ms-swift's arguments. What it returns (`ResolvedRun`) is read, never derived again, by the layers above.

ms-swift's arguments are written in this module only: `swift_arguments` (the config's translation,
src/config/mapping.py `to_sft_kwargs`, plus the run's image-budget plugin and system prompt) and
`with_start` (the model and checkpoint the run's start decided: src/training/warm_start.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from src.config import ProjectConfig, to_sft_kwargs
from src.datasets.run_config import LoadedRun, load_run
from src.training.swift_plugin import vision_settings, with_plugin


@dataclass(frozen=True, slots=True)
class ResolvedRun(LoadedRun):
    """Everything a run needs from its config, derived once: read it, never derive a piece again.

    From the data layer (`LoadedRun`): `cfg` (the validated config, every rule passed), `preprocessor` and its
    `builder`, `augment_ops` (`custom.augment` parsed). The data layer's own functions (render, stats, cache)
    take it as their `LoadedRun`."""

    # ms-swift's SftArguments (RLHFArguments for stage 3) keyword arguments, complete but for the start
    # (`with_start`); None where the data paths were not checked (`check_paths=False`: infer, rows)
    swift_args: dict[str, Any] | None
    image_settings: dict[str, str]  # the vision variables (IMAGE_MAX_TOKEN_NUM, ...) the run's images see


def swift_arguments(cfg: ProjectConfig, system: str, image_settings: Mapping[str, str]) -> dict[str, Any]:
    """ms-swift's keyword arguments for `cfg`: the config's translation, the plugin that carries
    `image_settings` to `swift infer` / `swift export` on a checkpoint, and `system` (the prompt scheme's,
    `prompts.system` when set) as ms-swift's own `system`, so the checkpoint's args.json holds what the model
    saw."""
    kwargs = with_plugin(to_sft_kwargs(cfg), image_settings)
    kwargs["system"] = system  # ms-swift's `system` is refused in the YAML: `prompts.system` is its one spelling
    return kwargs


def with_start(kwargs: Mapping[str, Any], *, model: str | None, resume_from_checkpoint: str | None) -> dict[str, Any]:
    """`kwargs` with the model to load and the checkpoint to resume that the run's start decided."""
    return {**kwargs, "model": model, "resume_from_checkpoint": resume_from_checkpoint}


def resolve_run(config, base_config=None, *, check_paths: bool = True, on_cpu: bool = False,
                world_size: int | None = None) -> ResolvedRun:
    """Load and check `config` (with `--base_config` under it and the CPU overlay when `on_cpu`) and derive
    everything a run needs, once. Raises one ConfigError listing every problem of every rule.

    `world_size`: the processes of a training job; with it, a stage-3 config's own checks run too
    (src/training/grpo_checks.py: rewards, generation batch, ...). Without it (render, cache, rows, infer) they
    do not: those commands read a stage-3 config's data and prompts only.
    """

    def stage_3_problems(cfg: ProjectConfig) -> list[str]:
        if world_size is None or not cfg.reinforcement:
            return []
        from src.training.grpo_checks import reinforcement_problems  # the rewards' names: not for SFT

        return reinforcement_problems(cfg, world_size)

    loaded = load_run(config, base_config, check_paths=check_paths, on_cpu=on_cpu, more_rules=stage_3_problems)
    image_settings = vision_settings(os.environ)  # after the config's `env:`, which load_run applied
    args = swift_arguments(loaded.cfg, loaded.builder.scheme.system, image_settings) if check_paths else None
    return ResolvedRun(cfg=loaded.cfg, swift_args=args, augment_ops=loaded.augment_ops,
                       preprocessor=loaded.preprocessor, image_settings=image_settings)
