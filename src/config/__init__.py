"""Config layer: YAML `extends` chains -> typed ProjectConfig -> ms-swift `SftArguments` kwargs.

Importing this package must stay cheap: no torch, no ms-swift import (the dry run relies on it).
"""

from __future__ import annotations

from pathlib import Path

from .errors import EXIT_CONFIG_ERROR, ConfigError
from .loader import MergedConfig, Origin, load_merged_config
from .mapping import to_sft_kwargs
from .rules import check_rules
from .schema import ProjectConfig, validate_config

__all__ = [
    "EXIT_CONFIG_ERROR", "ConfigError", "MergedConfig", "Origin", "ProjectConfig", "load_project_config",
    "to_sft_kwargs",
]


def load_project_config(config: Path | str, base_config: Path | str | None = None, *,
                        check_paths: bool = True) -> ProjectConfig:
    """Load, merge, type-check and rule-check a config; raise ConfigError listing every problem."""
    merged = load_merged_config(Path(config), Path(base_config) if base_config else None)
    cfg = validate_config(merged)
    check_rules(cfg, check_paths=check_paths)
    return cfg
