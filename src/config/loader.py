"""Resolving a config file and its `extends` chain into one mapping, remembering where each value came from.

Rules (also in openspec/specs/config/spec.md):
- `extends:` is a path or a list of paths, relative to the file that names it; bases are merged in
  the order listed, then the file itself on top. Chains may be of any depth; a cycle is an error
  that prints the chain.
- Mappings merge key by key, at any depth; lists and scalars replace.
- `--base_config` is merged under the whole chain.
- An overlay (the CPU overrides of `configs/cpu.yaml` for `gpus=cpu`) is merged on top of the whole
  chain: its own keys only, not its `extends`; every value it changes is recorded. An overlay of upper
  bounds (`configs/cpu_grpo.yaml`, `at_most`) changes a number only where the chain's is larger or unset.
  An overlay never hides an invalid value: a bound leaves a value that is not a finite number, and a mapping
  is never merged over a value that is not one, for validation to refuse as on a GPU.
- A file reached twice (two bases that extend the same file) is merged once, at its first place.
- Path-valued keys are resolved against the directory of the file that declared them: the project's
  PATH_KEYS, and ms-swift's path fields (SWIFT_PATH_FIELDS) in whichever ms-swift section they are written.
- `data:` is another name for `custom:`, and `tuner.tuner_type` for `tuner.train_type`.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .excerpt import excerpt, json_excerpt
from .yaml_io import read_yaml_mapping

# The project's keys whose string values are file-system paths relative to the declaring file.
PATH_KEYS = frozenset({
    "custom.train_jsonl",
    "custom.val_jsonl",
    "deepspeed.config",
    "run.init_from",
    "custom.cached_dataset",
})
# ms-swift fields whose values are paths (a string or a list of them), resolved in whichever of the ms-swift
# sections they are written (`training.resume_from_checkpoint` as `tuner.resume_from_checkpoint`): this project
# runs offline, so a model or adapter is a local directory.
SWIFT_PATH_FIELDS = frozenset({
    "model", "adapters", "resume_from_checkpoint", "output_dir", "logging_dir",
    "ref_model", "ref_adapters", "teacher_model", "teacher_adapters", "reward_model", "reward_adapters",
})
SWIFT_PATH_SECTIONS = ("model", "template", "tuner", "training", "rlhf")  # schema.SWIFT_SECTIONS
# Values of a path field that are names, not paths (by field name).
NOT_A_PATH = {
    "resume_from_checkpoint": {"auto"},
}
SECTION_ALIASES = {"data": "custom"}
KEY_ALIASES = {"tuner.tuner_type": "tuner.train_type"}


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value was set: the file and, when known, the 1-based line."""

    file: Path
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)


@dataclass(slots=True)
class MergedConfig:
    """The merged mapping of a whole chain, the origin of every dotted key, and the chain's files."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)  # values an overlay changed, in its order


@dataclass(frozen=True, slots=True)
class Override:
    """One value an overlay changed: the dotted key, its value before and after, and where the new one is set."""

    key: str
    before: Any
    after: Any
    origin: Origin

    def reason(self) -> str:
        """The comment on the overlay's line for this key (`# ...`), the overlay's own explanation; or ''."""
        try:
            line = self.origin.file.read_text(encoding="utf-8").splitlines()[(self.origin.line or 0) - 1]
        except (OSError, IndexError):
            return ""
        return line.split("#", 1)[1].strip() if "#" in line else ""


def _is_deepspeed_path(value: str) -> bool:
    return value.endswith(".json") or "/" in value or value.startswith(".")


def _resolve_path(dotted: str, value: Any, base_dir: Path) -> Any:
    if isinstance(value, list):  # e.g. tuner.adapters: a list of paths
        return [_resolve_path(dotted, item, base_dir) for item in value]
    if not isinstance(value, str) or value in NOT_A_PATH.get(dotted.split(".")[-1], ()):
        return value
    if dotted == "deepspeed.config" and not _is_deepspeed_path(value):
        return value  # a preset name such as zero2
    return str((base_dir / os.path.expanduser(value)).resolve())


def _normalise(data: dict[str, Any], lines: dict[str, int], path: Path) -> dict[str, Any]:
    """Apply section and key aliases to one file's mapping, refusing a key given under both names."""
    out: dict[str, Any] = {}
    written_as: dict[str, str] = {}  # canonical section -> the name the file used first
    for key, value in data.items():
        target = SECTION_ALIASES.get(key, key)
        if target in out and isinstance(out[target], dict) and isinstance(value, dict):
            both = sorted(set(out[target]) & set(value))
            if both:
                alias = key if key != target else written_as[target]
                raise ConfigError(
                    f"{path}: `{alias}.{both[0]}` and `{target}.{both[0]}` set the same value; keep one"
                )
            out[target] = {**out[target], **value}
            for sub in value:
                lines.setdefault(f"{target}.{sub}", lines.get(f"{key}.{sub}", 0))
        else:
            out[target] = value
            written_as[target] = key
            if target != key:
                for dotted, line in list(lines.items()):
                    if dotted == key or dotted.startswith(key + "."):
                        lines[target + dotted[len(key):]] = line
    for alias, canonical in KEY_ALIASES.items():
        section, alias_key = alias.split(".")
        _, canonical_key = canonical.split(".")
        block = out.get(section)
        if isinstance(block, dict) and alias_key in block:
            if canonical_key in block:
                raise ConfigError(f"{path}: `{alias}` and `{canonical}` set the same value; keep one")
            block[canonical_key] = block.pop(alias_key)
            lines[canonical] = lines.get(alias, 0)
    return out


def _flatten_origins(values: Any, prefix: str, origin_file: Path, lines: dict[str, int], out: dict) -> None:
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        out[dotted] = Origin(origin_file, lines.get(dotted) or None)
        _flatten_origins(value, dotted + ".", origin_file, lines, out)


def _resolve_paths(values: dict[str, Any], base_dir: Path) -> None:
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        block = values.get(section)
        if isinstance(block, dict) and key in block:
            block[key] = _resolve_path(dotted, block[key], base_dir)
    for section in SWIFT_PATH_SECTIONS:
        block = values.get(section)
        for key in (SWIFT_PATH_FIELDS & set(block) if isinstance(block, dict) else ()):
            block[key] = _resolve_path(f"{section}.{key}", block[key], base_dir)


def _leaf_keys(values: dict, prefix: str):
    """Every dotted key under `values` (mappings and leaves), `prefix` first."""
    for key, value in values.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaf_keys(value, f"{prefix}{key}.")


def _merge_into(target: MergedConfig, values: dict[str, Any], origins: dict[str, Origin]) -> None:
    def merge(dst: dict, src: dict, prefix: str) -> None:
        for key, value in src.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and isinstance(dst.get(key), dict):
                merge(dst[key], value, dotted + ".")
                continue
            # A replaced subtree keeps no origins from the file it replaced. Walking the old subtree, not every
            # origin, keeps a merge linear (160,000 `env:` keys took a minute when each scanned them all).
            if isinstance(dst.get(key), dict):
                for stale in _leaf_keys(dst[key], dotted + "."):
                    target.origins.pop(stale, None)
            dst[key] = copy.deepcopy(value)

    merge(target.values, values, "")
    target.origins.update(origins)


def _extends_list(value: Any, path: Path, line: int | None) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    where = f"{path}:{line}" if line else str(path)
    raise ConfigError(f"{where}: `extends` must be a path or a list of paths, got {excerpt(value)}")


def _load_chain(path: Path, stack: tuple[Path, ...], merged: MergedConfig) -> None:
    path = path.resolve()
    if path in merged.files:
        return  # reached again through another `extends` (a diamond): merged once, at its first place
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"extends cycle: {chain}")
    data, lines = read_yaml_mapping(path)
    extends = data.pop("extends", None)
    if extends is not None:
        for parent in _extends_list(extends, path, lines.get("extends")):
            parent_path = (path.parent / os.path.expanduser(parent))
            if not parent_path.is_file():
                raise ConfigError(
                    f"{path}:{lines.get('extends', 1)}: extends: file not found: {parent} "
                    f"(resolved to {parent_path.resolve()}; paths are relative to {path.parent})"
                )
            _load_chain(parent_path, (*stack, path), merged)
    data = _normalise(data, lines, path)
    _resolve_paths(data, path.parent)
    origins: dict[str, Origin] = {}
    _flatten_origins(data, "", path, lines, origins)
    _merge_into(merged, data, origins)
    merged.files.append(path)


def _leaf_values(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict) or not values:
        return {prefix[:-1]: values} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(_leaf_values(value, f"{prefix}{key}."))
    return out


def apply_overlay(merged: MergedConfig, overlay: Path, *, at_most: bool = False) -> None:
    """Merge `overlay`'s own keys (not its `extends`) on top of `merged`, recording each value it changes in
    `merged.overrides`. `at_most`: the overlay's values are upper bounds, all numbers; a key changes only where
    the chain's value is unset or larger (a chain that already asks for less keeps its own). A bound leaves
    a value that is not a finite number, and no mapping is merged over a value that is not one: validation
    refuses those as it does without the overlay.

    Raises ConfigError for a missing or invalid file, or a bound that is not a number."""
    path = overlay.resolve()
    data, lines = read_yaml_mapping(path)
    data.pop("extends", None)  # the overlay's own keys only: its bases are already under the chain
    data = _normalise(data, lines, path)
    _resolve_paths(data, path.parent)
    before = _leaf_values(merged.values)
    if at_most:
        bounds = _leaf_values(data)
        for key, bound in bounds.items():
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise ConfigError(f"{path}:{lines.get(key, 1)}: `{key}` = {json_excerpt(bound)}: an upper bound "
                                  "must be a number")
        # A bound applies where the chain's value is unset or a finite number above it; any other value (a
        # string, a NaN, a mapping) stays for validation to refuse, as it is refused on a GPU.
        kept = set()
        for key, bound in bounds.items():
            value = _value_at(merged.values, key)
            if value is not None and not (_finite_number(value) and value > bound):
                kept.add(key)
        data = _without(data, kept)
    data = _over_mappings_only(data, merged.values)
    origins: dict[str, Origin] = {}
    _flatten_origins(data, "", path, lines, origins)
    _merge_into(merged, data, origins)
    merged.files.append(path)
    for key, value in _leaf_values(data).items():
        if before.get(key, None) != value or key not in before:
            merged.overrides.append(Override(key, before.get(key), value, origins[key]))


def _value_at(values: dict[str, Any], dotted: str) -> Any:
    """The chain's value at `dotted` (a mapping included), or None where it has none."""
    for part in dotted.split("."):
        if not isinstance(values, dict):
            return None
        values = values.get(part)
    return values


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _over_mappings_only(values: dict[str, Any], chain: Any) -> dict[str, Any]:
    """`values` less each mapping whose place in `chain` holds a value that is not a mapping (nor null): an
    overlay never merges a mapping over a list or a scalar, which validation then refuses as without it."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        there = chain.get(key) if isinstance(chain, dict) else None
        if isinstance(value, dict):
            if there is not None and not isinstance(there, dict):
                continue
            out[key] = _over_mappings_only(value, there)
        else:
            out[key] = value
    return out


def _without(values: dict[str, Any], dotted_keys: set[str], prefix: str = "") -> dict[str, Any]:
    """`values` less the leaves named in `dotted_keys` (and the mappings they leave empty)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rest = _without(value, dotted_keys, dotted + ".")
            if rest:
                out[key] = rest
        elif dotted not in dotted_keys:
            out[key] = value
    return out


def load_merged_config(config: Path, base_config: Path | None = None, overlay: Path | None = None) -> MergedConfig:
    """Merge `base_config` (if any), then `config` with its whole `extends` chain, then `overlay`'s own
    keys (if any) into one mapping; `overrides` lists each value the overlay changed.

    Raises ConfigError for a missing file, invalid YAML, a bad `extends` value or a cycle.
    """
    merged = MergedConfig()
    if base_config is not None:
        _load_chain(Path(base_config), (), merged)
    _load_chain(Path(config), (), merged)
    if overlay is not None:
        apply_overlay(merged, Path(overlay))
    return merged
