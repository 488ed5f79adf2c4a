"""Reading one YAML file: safe loading, syntax errors with file:line:column, and key line numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        dotted = f"{prefix}{key_node.value}"
        out[dotted] = key_node.start_mark.line + 1
        _key_lines(value_node, dotted + ".", out)


def read_yaml_mapping(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Load `path` with `yaml.safe_load` and return (mapping, {dotted key: 1-based line}).

    Raises ConfigError naming the file (and line:column for syntax errors) when the file is missing,
    is not valid YAML, or does not hold a mapping at the top. An empty file is an empty mapping.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1: the top level must be a mapping of sections (model:, tuner:, ...), "
            f"got a {type(data).__name__}"
        )
    lines: dict[str, int] = {}
    _key_lines(root, "", lines)
    return data, lines
