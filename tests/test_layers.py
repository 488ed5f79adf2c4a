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
