"""The fields of ms-swift's `SftArguments`, read from the installed sources without importing them.

Importing `swift.arguments` pulls in torch and the trainers (about 7 s). Validating a YAML must not
pay that, so the dataclass fields of `SftArguments` and all of its bases (ms-swift's mixins and
transformers' `TrainingArguments`) are collected by parsing their source files with `ast`. Nothing
is hand-copied: a field added in a new ms-swift release is picked up as it is.
`tests/test_swift_fields.py` checks the result against `dataclasses.fields(SftArguments)`.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

ROOT_MODULE = "swift.arguments.sft_args"
ROOT_CLASS = "SftArguments"
RLHF_MODULE = "swift.arguments.rlhf_args"
RLHF_CLASS = "RLHFArguments"
ORMS_MODULE = "swift.rewards.orm"
TUNERS_MODULE = "swift.arguments.base_args.base_args"  # get_supported_tuners(): the built-in tuners
TUNER_PLUGIN_MODULE = "swift.tuner_plugin.mapping"  # tuners_map: the plugin tuners
TRAINER_UTILS_MODULE = "transformers.trainer_utils"  # the enums of TrainingArguments' strategy fields
# ms-swift / transformers fields typed `str` whose value must be one of a set (read from the sources below):
# field -> (where the set is, the enum class in TRAINER_UTILS_MODULE or None for the tuners).
CHOICE_FIELDS = {
    "tuner_type": None,
    "save_strategy": "SaveStrategy",
    "eval_strategy": "IntervalStrategy",
    "logging_strategy": "IntervalStrategy",
    "lr_scheduler_type": "SchedulerType",
}


@dataclass(frozen=True, slots=True)
class SwiftField:
    """One dataclass field: its name, its annotation as source text, and the class declaring it."""

    name: str
    annotation: str
    owner: str
    default_is_none: bool = False  # `= None` or `field(default=None)`: null is ms-swift's own default
    default: object = None  # the literal default (also of `default_factory=lambda: [...]`), None when not literal


def _module_file(module: str) -> Path | None:
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations)))
    rel = Path(*module.split(".")[1:])
    for candidate in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _parse(module: str) -> ast.Module | None:
    path = _module_file(module)
    return ast.parse(path.read_text(encoding="utf-8")) if path else None


def _resolve_relative(module: str, level: int, name: str | None, is_package: bool) -> str:
    parts = module.split(".")
    # A package's own __init__ counts as the package itself for relative imports.
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def _find_class(module: str, name: str, depth: int = 0) -> tuple[str, ast.ClassDef] | None:
    """Find class `name` as seen from `module`, following `from x import name` re-exports."""
    tree = _parse(module)
    if tree is None or depth > 8:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    path = _module_file(module)
    is_package = path is not None and path.name == "__init__.py"
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            if (alias.asname or alias.name) != name:
                continue
            source = (
                _resolve_relative(module, node.level, node.module, is_package)
                if node.level
                else node.module or ""
            )
            found = _find_class(source, alias.name, depth + 1)
            if found is None:  # `from pkg import submodule_class` where the name is a module attr
                found = _find_class(f"{source}.{alias.name}", alias.name, depth + 1)
            if found:
                return found
    return None


def _default_is_none(stmt: ast.AnnAssign) -> bool:
    value = stmt.value
    if isinstance(value, ast.Constant):
        return value.value is None
    if isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] == "field":
        return any(k.arg == "default" and isinstance(k.value, ast.Constant) and k.value.value is None
                   for k in value.keywords)
    return False


def _literal_default(stmt: ast.AnnAssign) -> object:
    value = stmt.value
    if isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] == "field":
        keywords = {k.arg: k.value for k in value.keywords}
        if "default" in keywords:
            value = keywords["default"]
        elif isinstance(keywords.get("default_factory"), ast.Lambda):
            value = keywords["default_factory"].body
        else:
            return None
    try:
        return ast.literal_eval(value) if value is not None else None
    except ValueError:
        return None


def _is_dataclass_field(stmt: ast.stmt) -> bool:
    if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
        return False
    text = ast.unparse(stmt.annotation)
    return not (text.startswith("ClassVar") or text.startswith("InitVar"))


def _class_chain(module: str, node: ast.ClassDef) -> list[tuple[str, ast.ClassDef]]:
    """The class and its bases, depth first, each once (a simplified MRO: enough for fields)."""
    chain: list[tuple[str, ast.ClassDef]] = []
    seen: set[tuple[str, str]] = set()

    def visit(mod: str, cls: ast.ClassDef) -> None:
        if (mod, cls.name) in seen:
            return
        seen.add((mod, cls.name))
        chain.append((mod, cls))
        for base in cls.bases:
            base_name = ast.unparse(base).split(".")[-1]
            found = _find_class(mod, base_name)
            if found:
                visit(*found)

    visit(module, node)
    return chain


@functools.cache
def _argument_fields(module: str, class_name: str) -> dict[str, SwiftField]:
    found = _find_class(module, class_name)
    if found is None:
        raise RuntimeError(f"cannot find {module}.{class_name}: is ms-swift installed?")
    fields: dict[str, SwiftField] = {}
    for owner_module, cls in _class_chain(*found):
        for stmt in cls.body:
            if _is_dataclass_field(stmt) and stmt.target.id not in fields:
                fields[stmt.target.id] = SwiftField(
                    name=stmt.target.id,
                    annotation=ast.unparse(stmt.annotation),
                    owner=f"{owner_module}.{cls.name}",
                    default_is_none=_default_is_none(stmt),
                    default=_literal_default(stmt),
                )
    return fields


def sft_argument_fields() -> dict[str, SwiftField]:
    """All dataclass fields of ms-swift's `SftArguments`, by name, read statically from the sources.

    The most derived declaration wins, as in Python's dataclass MRO. Raises RuntimeError when the
    installed ms-swift has no `SftArguments` where this project expects it.
    """
    return _argument_fields(ROOT_MODULE, ROOT_CLASS)


def rlhf_argument_fields() -> dict[str, SwiftField]:
    """All fields of ms-swift's `RLHFArguments` (GRPO and the other RLHF methods; `SftArguments`'s among them):
    the keys a config's `rlhf:` section may hold. Read statically, like `sft_argument_fields`."""
    return _argument_fields(RLHF_MODULE, RLHF_CLASS)


def builtin_reward_names() -> tuple[str, ...]:
    """The names of ms-swift's own reward functions (the keys of its `orms` table), read statically."""
    tree = _parse(ORMS_MODULE)
    for node in (tree.body if tree else []):
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "orms" for t in node.targets)
                and isinstance(node.value, ast.Dict)):
            return tuple(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    return ()


def swift_defaults() -> dict[str, object]:
    """ms-swift's literal default for each `SftArguments` field (None where it is not a literal)."""
    return {name: f.default for name, f in sft_argument_fields().items()}


def _dict_keys(module: str, name: str) -> set[str]:
    tree = _parse(module)
    for node in (tree.body if tree else []):
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
                and isinstance(node.value, ast.Dict)):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return set()


def supported_tuners() -> tuple[str, ...]:
    """ms-swift's `get_supported_tuners()` (the built-in tuners and `tuners_map`'s), read statically, sorted;
    () when the sources are not where this project expects them."""
    tree = _parse(TUNERS_MODULE)
    names: set[str] = set()
    for node in (tree.body if tree else []):
        if isinstance(node, ast.FunctionDef) and node.name == "get_supported_tuners":
            names = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return tuple(sorted(names | _dict_keys(TUNER_PLUGIN_MODULE, "tuners_map"))) if names else ()


def _enum_values(module: str, class_name: str) -> tuple[str, ...]:
    found = _find_class(module, class_name)
    if found is None:
        return ()
    return tuple(stmt.value.value for stmt in found[1].body
                 if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                 and isinstance(stmt.value.value, str))


@functools.cache
def field_choices() -> dict[str, tuple[str, ...]]:
    """The values each field of CHOICE_FIELDS accepts (ms-swift's tuners, transformers' SaveStrategy,
    IntervalStrategy and SchedulerType members), read statically; a field whose set cannot be read is left out
    (ms-swift still checks it)."""
    out = {}
    for field_name, enum in CHOICE_FIELDS.items():
        values = supported_tuners() if enum is None else _enum_values(TRAINER_UTILS_MODULE, enum)
        if values:
            out[field_name] = values
    return out
