"""Config layer: YAML `extends` chains -> typed ProjectConfig -> ms-swift `SftArguments` kwargs.

Importing this package must stay cheap: no torch, no ms-swift import (the dry run relies on it).
"""

from __future__ import annotations

from pathlib import Path

from .errors import EXIT_CONFIG_ERROR, ConfigError
from .loader import MergedConfig, Origin, apply_overlay, load_merged_config
from .mapping import to_sft_kwargs
from .rules import check_rules
from .schema import ProjectConfig, validate_config

__all__ = [
    "CPU_GRPO_OVERLAY", "CPU_OVERLAY", "EXIT_CONFIG_ERROR", "ConfigError", "MergedConfig", "Origin", "ProjectConfig",
    "load_project_config", "to_sft_kwargs",
]


CPU_OVERLAY = Path(__file__).resolve().parents[2] / "configs" / "cpu.yaml"
# Upper bounds for a GRPO run on CPU (rollouts of `num_generations` x `max_completion_length` tokens), merged
# after CPU_OVERLAY only when the chain is a GRPO run: SFT keys do not know `rlhf:`.
CPU_GRPO_OVERLAY = CPU_OVERLAY.with_name("cpu_grpo.yaml")


def _is_grpo(values: dict) -> bool:
    rlhf = values.get("rlhf")
    return isinstance(rlhf, dict) and rlhf.get("rlhf_type") == "grpo"


def load_project_config(config: Path | str, base_config: Path | str | None = None, *,
                        check_paths: bool = True, on_cpu: bool = False) -> ProjectConfig:
    """Load, merge, type-check and rule-check a config; raise ConfigError listing every problem.

    `on_cpu` merges the keys of `configs/cpu.yaml` on top of the whole chain (`gpus=cpu`): float32, no
    bf16/fp16, `use_cpu`, sdpa, packing off; for a GRPO chain, then the upper bounds of `configs/cpu_grpo.yaml`
    (fewer, shorter completions per step). `cfg.merged.overrides` lists what they changed.
    """
    merged = load_merged_config(Path(config), Path(base_config) if base_config else None,
                                CPU_OVERLAY if on_cpu else None)
    if on_cpu and _is_grpo(merged.values):
        apply_overlay(merged, CPU_GRPO_OVERLAY, at_most=True)
    cfg = validate_config(merged)
    check_rules(cfg, check_paths=check_paths)
    return cfg
