"""The layout's promise: each layer imports only the layers below it, and no module imports itself back
through others (function-local imports included: they are not a way around the rule)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
ENTRY = 5
# training sits above evaluation: it scores the model by generation with src.infer's and src.eval's code.
# rewards score answers with the evaluation's matching; training hands them to ms-swift.
LAYERS = {"config": 0, "datasets": 1, "inference": 2, "evaluation": 3, "rewards": 3.5, "training": 4, "tiny_model": 1,
          "sft": ENTRY, "infer": ENTRY, "eval": ENTRY, "vis": ENTRY, "demo": ENTRY, "cli": ENTRY}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every `src.*` module `path` imports, anywhere in the file (relative imports resolved)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("src.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("src."):
                found.add(module)
                folder = SRC / Path(*module.split(".")[1:])
                found |= {f"{module}.{a.name}" for a in node.names
                          if (folder / a.name).is_dir() or (folder / f"{a.name}.py").is_file()}
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[-1] == "__main__":
        return ENTRY  # `python -m src.<package>` is a command line, like the entries
    return LAYERS[parts[1]]


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_every_module_belongs_to_a_layer():
    unknown = sorted(m for m in _graph() if m != "src" and m.split(".")[1] not in LAYERS)
    assert unknown == [], f"modules outside the layers: {unknown} (add them to a layer in AGENTS.md and here)"


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for module, imported in _graph().items():
        if module == "src":
            continue
        for target in imported:
            if _layer(target) > _layer(module):
                wrong.append(f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})")
            if module.split(".")[1] == "tiny_model" and _layer(module) < ENTRY and target.split(".")[1] not in (
                    "tiny_model", "config"):
                wrong.append(f"{module} imports {target}: the tiny model needs only the config layer")
    assert wrong == []


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def _calls(path: Path) -> set[str]:
    """The names of the functions `path` calls (`f(...)` and `x.f(...)`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            found.add(func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "")
    return found


# Each piece of a resolved run is derived in these modules only (src/training/resolve.py `resolve_run`, through
# the data layer's `load_run`); every other module reads the `ResolvedRun`.
DERIVED_ONCE = {
    "to_sft_kwargs": {"src.training.resolve"},  # ms-swift's arguments: the config's translation ...
    "with_plugin": {"src.training.resolve"},  # ... with the image budget's plugin
    "vision_settings": {"src.training.resolve"},  # the image settings
    "parse_augment_ops": {"src.datasets.run_config"},  # the augmentation operations
    "make_preprocessor": {"src.datasets.run_config", "src.datasets.plan"},  # the builder (plan: a config alone)
    "load_run": {"src.training.resolve", "src.datasets.run_config"},
    "reinforcement_problems": {"src.training.resolve"},  # stage 3's rules, with every other rule
    # the config: the data layer's load, and `python -m src.config get` (which prints one key)
    "load_project_config": {"src.config", "src.config.__main__", "src.datasets.run_config"},
}


def test_each_piece_of_a_run_is_derived_in_one_place():
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    wrong = sorted(f"{module} calls {name}() (derived only in {', '.join(sorted(allowed))})"
                   for module, path in modules.items() for name, allowed in DERIVED_ONCE.items()
                   if name in _calls(path) and module not in allowed)
    assert wrong == []


def test_a_config_value_goes_only_downwards_from_the_training_entry_to_ms_swift():
    """src/sft.py -> training/setup.py -> training/resolve.py -> datasets/run_config.py -> config/: each module on
    the path imports only its own layer or lower ones, and nothing below training imports training."""
    graph = _graph()
    path = ["src.sft", "src.training.setup", "src.training.resolve", "src.datasets.run_config", "src.config"]
    for upper, lower in zip(path, path[1:], strict=False):
        assert lower in graph[upper] or any(m.startswith(lower + ".") for m in graph[upper]), (upper, lower)
        assert _layer(lower) <= _layer(upper)
    below_training = [m for m in graph if m != "src" and _layer(m) < LAYERS["training"]]
    climbing = sorted(f"{m} imports {t}" for m in below_training for t in graph[m] if t.startswith("src.training"))
    assert climbing == []


def test_cli_imports_only_the_config_layer():
    """The user errors share one base class in src/config/errors.py: src/cli.py needs nothing above it."""
    assert {m for m in _graph()["src.cli"] if not m.startswith("src.config")} == set()
