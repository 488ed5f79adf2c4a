"""Showing and saving a resolved config: each value with the file it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .excerpt import json_excerpt
from .loader import MergedConfig


def _leaves(values: Any, prefix: str = ""):
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], values


def format_resolved(merged: MergedConfig) -> str:
    """One line per leaf key: `key = value   # file:line`, in config order; a long value cut, its length shown."""
    rows = [(key, json_excerpt(value), str(merged.origins.get(key, ""))) for key, value in _leaves(merged.values)]
    # Values are cut (`json_excerpt`) and the padding capped: one long value must not widen every line.
    width = min(max((len(k) + len(v) for k, v, _ in rows), default=0), 100) + 3
    return "\n".join(f"{k} = {v}".ljust(width + 2) + f"# {o}" for k, v, o in rows)


def format_overrides(overrides) -> str:
    """One line per value an overlay changed: `key: before -> after   # file:line: reason`."""
    rows = []
    for o in overrides:
        reason = o.reason()
        rows.append(f"{o.key}: {json_excerpt(o.before)} -> {json_excerpt(o.after)}"
                    f"   # {o.origin}{': ' + reason if reason else ''}")
    return "\n".join(rows)


def resolved_yaml(merged: MergedConfig) -> str:
    """The merged config as YAML text (no `extends`, absolute paths; the chain's files in a header comment):
    loading it alone gives the same run."""
    header = "# Resolved config. Loading this file alone reproduces the run's arguments.\n# From:\n"
    header += "".join(f"#   {f}\n" for f in merged.files)
    if merged.overrides:
        header += "# CPU overrides (values the CPU overlays changed on top of the others):\n"
        header += "".join(f"#   {line}\n" for line in format_overrides(merged.overrides).splitlines())
    return header + yaml.safe_dump(merged.values, sort_keys=False, allow_unicode=True)


def dump_resolved_yaml(merged: MergedConfig, path: Path) -> Path:
    """Write `resolved_yaml(merged)` to `path`. Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(resolved_yaml(merged), encoding="utf-8")
    return path
