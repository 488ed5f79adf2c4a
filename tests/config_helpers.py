"""Small config trees for the config-layer tests, written into a test's tmp_path.

A tree is `root/base.yaml` (extends the shipped configs/cpu.yaml by absolute path and sets the
required model, data and output values with paths relative to itself) and `root/run.yaml`
(extends base.yaml and adds what the test is about).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
CPU_YAML = CONFIGS / "cpu.yaml"


def write_yaml(path: Path, content: dict[str, Any] | str) -> Path:
    """Write `content` (a mapping, or YAML text that is dedented) to `path`; return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(content) if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def make_fake_model(path: Path) -> Path:
    """A directory that passes the config layer's model check (config.json inside); not a loadable model."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}), encoding="utf-8")
    return path


def make_data(path: Path, n: int = 6) -> dict[str, Any]:
    """Synthetic records and images under `path` (train.jsonl, val.jsonl, images/)."""
    from src.datasets.synth import write_synthetic_dataset

    return write_synthetic_dataset(path, n)


@dataclass(frozen=True)
class ConfigTree:
    root: Path
    base: Path  # root/base.yaml
    config: Path  # root/run.yaml: the file to load
    model: Path
    train_jsonl: Path
    val_jsonl: Path
    output_dir: Path


def write_config_tree(root: Path, body: dict[str, Any] | str | None = None, *,
                      data_dir: Path | None = None, model: Path | None = None,
                      extends: str | list[str] = "base.yaml") -> ConfigTree:
    """Write a minimal valid tree under `root`; `body` goes into run.yaml below `extends: <extends>`.

    A string body is YAML text (dedented, leading blank lines dropped) starting on line 2 of run.yaml.
    Without `data_dir`, synthetic data is written to root/data; without `model`, a fake model dir
    to root/model.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    model = model or make_fake_model(root / "model")
    if data_dir is None:
        data_dir = root / "data"
        make_data(data_dir)

    def rel(path: Path) -> str:
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)

    base = write_yaml(root / "base.yaml", {
        "extends": str(CPU_YAML),
        "model": {"model": rel(model)},
        "custom": {"train_jsonl": rel(data_dir / "train.jsonl"), "val_jsonl": rel(data_dir / "val.jsonl")},
        "training": {"output_dir": "out"},
    })
    if body is None or isinstance(body, dict):
        config = write_yaml(root / "run.yaml", {"extends": extends, **(body or {})})
    else:
        head = yaml.safe_dump({"extends": extends}, default_flow_style=True, width=1000)[1:-2] + "\n"
        config = write_yaml(root / "run.yaml", head + textwrap.dedent(body).lstrip("\n"))
    return ConfigTree(root=root, base=base, config=config, model=model.resolve(),
                      train_jsonl=(data_dir / "train.jsonl").resolve(), val_jsonl=(data_dir / "val.jsonl").resolve(),
                      output_dir=(root / "out").resolve())
