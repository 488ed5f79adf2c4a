"""DeepSpeed: presets and shipped json files map into ms-swift's `deepspeed`, and a missing package is
named before anything starts (the tests install the package; its absence is simulated)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from src.config import ConfigError, load_project_config, to_sft_kwargs
from src.config.loader import load_merged_config
from src.config.schema import validate_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs" / "deepspeed").glob("*.json"))


def test_shipped_files_are_valid_and_their_stage_matches_their_name():
    assert [p.stem for p in SHIPPED] == ["zero2", "zero3", "zero3_offload"]
    for path in SHIPPED:
        stage = json.loads(path.read_text())["zero_optimization"]["stage"]
        assert stage == int(path.stem[4])


def _config(tmp_path: Path, ds: str) -> Path:
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "train.jsonl").write_text("")
    path = tmp_path / "run.yaml"
    path.write_text(f"extends: {REPO / 'configs' / 'base.yaml'}\nmodel:\n  model: ./model\n"
                    f"custom:\n  train_jsonl: train.jsonl\ntraining:\n  output_dir: out\n"
                    f"deepspeed:\n  enabled: true\n  config: {ds}\n")
    return path


ZERO3_JSON = str(REPO / "configs" / "deepspeed" / "zero3.json")


@pytest.mark.parametrize("ds", ["zero2", "zero3_offload", ZERO3_JSON])
def test_preset_or_json_maps_to_swift_deepspeed(tmp_path, ds):
    cfg = validate_config(load_merged_config(_config(tmp_path, ds)))  # types only: the package is a rule
    assert to_sft_kwargs(cfg)["deepspeed"] == ds


def test_missing_package_is_named_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as on a machine without the package (the tests install it)
    with pytest.raises(ConfigError, match=r"`deepspeed` package is not installed: `pip install -e '\.\[gpu\]'`"):
        load_project_config(_config(tmp_path, "zero2"), check_paths=False)


def test_enabled_without_config_and_unknown_preset_are_refused(tmp_path):
    path = _config(tmp_path, "null")
    with pytest.raises(ConfigError, match="needs `deepspeed.config`: a preset"):
        load_project_config(path, check_paths=False)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_project_config(_config(tmp_path, "zero9"), check_paths=False)
