"""Warm starts from a stage-1 (or stage-2) result that is torn, moved, or of another model: refused before the
run directory is touched, with a message instead of ms-swift's traceback from inside its merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from src.config import ConfigError
from src.training.warm_start import plan_start

REPO = Path(__file__).resolve().parents[1]


def _adapter(path: Path, base: Path) -> Path:
    """An adapter checkpoint as ms-swift saves one: its config, its weights and the run's args.json."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 8}))
    (path / "args.json").write_text(json.dumps({"model": str(base), "tuner_type": "lora"}))
    save_file({"base_model.model.merger.lora_A.weight": torch.zeros(8, 64)}, str(path / "adapter_model.safetensors"))
    return path


def _model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    return path


def _plan(tmp_path: Path, init_from: Path, model: Path):
    return plan_start({"model": str(model)}, str(init_from), tmp_path / "out", defaults={})


def test_a_whole_adapter_plans_a_merge(tmp_path):
    base = _model(tmp_path / "model")
    adapter = _adapter(tmp_path / "s1" / "checkpoint-2", base)
    plan = _plan(tmp_path, adapter, base)
    assert plan.merge_adapter == str(adapter) and plan.model == str(tmp_path / "out" / "init_merged")
    assert not any("not into `model.model`" in m for m in plan.messages)


def test_an_adapter_cut_short_while_saved_is_refused(tmp_path):
    base = _model(tmp_path / "model")
    adapter = _adapter(tmp_path / "s1" / "checkpoint-2", base)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=r"adapter_model\.safetensors: .*cut short while written"):
        _plan(tmp_path, adapter, base)


def test_an_adapter_without_weights_is_refused(tmp_path):
    base = _model(tmp_path / "model")
    adapter = _adapter(tmp_path / "s1" / "checkpoint-2", base)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"no adapter weights \(adapter_model\.safetensors\)"):
        _plan(tmp_path, adapter, base)


def test_a_full_checkpoint_missing_a_shard_is_refused(tmp_path):
    full = _model(tmp_path / "s1" / "checkpoint-2")
    save_file({"a": torch.zeros(2)}, str(full / "model-00001-of-00002.safetensors"))
    (full / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ConfigError, match=r"names shards that are missing: model-00002-of-00002\.safetensors"):
        _plan(tmp_path, full, full)


def test_an_adapter_whose_base_model_moved_is_refused_naming_it(tmp_path):
    base = _model(tmp_path / "model")
    adapter = _adapter(tmp_path / "s1" / "checkpoint-2", tmp_path / "gone")
    with pytest.raises(ConfigError, match=f"trained on the base model {tmp_path / 'gone'} .*not there any more"):
        _plan(tmp_path, adapter, base)


def test_an_adapter_of_another_base_says_which_model_it_is_merged_into(tmp_path):
    """A stage-2 adapter was trained on stage 2's init_merged, not on the model stage 3's config names: the
    merge goes into the adapter's base (right for the chain), and the run says so."""
    ours, theirs = _model(tmp_path / "model"), _model(tmp_path / "s2" / "init_merged")
    adapter = _adapter(tmp_path / "s2" / "checkpoint-4", theirs)
    plan = _plan(tmp_path, adapter, ours)
    assert f"was trained on {theirs}; it is merged into that model, not into `model.model` ({ours})" in \
        "\n".join(plan.messages)


def test_dry_run_refuses_a_torn_init_from_with_exit_2_and_leaves_no_run_directory(tmp_path, capsys):
    from src.datasets.synth import write_synthetic_dataset
    from src.sft import main
    from src.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=2)
    adapter = _adapter(tmp_path / "s1" / "checkpoint-2", model)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    config = tmp_path / "s2.yaml"
    config.write_text(f"extends: [{REPO / 'configs' / 'stage_2_llm_lora.yaml'}, {REPO / 'configs' / 'cpu.yaml'}]\n"
                      f"model:\n  model: {model}\nrun:\n  init_from: {adapter}\n"
                      "custom:\n  train_jsonl: data/train.jsonl\ntraining:\n  output_dir: out\n")
    for dry in (["--dry-run"], []):
        assert main(["--config", str(config), *dry]) == 2
        err = capsys.readouterr().err
        assert f"`run.init_from` = {adapter} cannot start a run: adapter_model.safetensors:" in err
        assert "Traceback" not in err
        assert not (tmp_path / "out").exists()  # nothing prepared for a run that cannot start


def test_an_adapter_checkpoint_as_model_is_refused_pointing_at_init_from(tmp_path):
    """configs/stage_2_llm_lora.yaml said to set model.model to the stage-1 checkpoint: with the LoRA variant the
    dry run passed and the run died in transformers ("Unrecognized model") after preparing its directory."""
    base = _model(tmp_path / "model")
    adapter = _adapter(tmp_path / "s1" / "checkpoint-2", base)
    with pytest.raises(ConfigError, match=rf"`model.model` = {adapter} is an adapter checkpoint, not a model: .*"
                                          rf"`run.init_from: {adapter}`.* \({base}, by its args.json\)"):
        plan_start({"model": str(adapter)}, None, tmp_path / "out", defaults={})
    full = _model(tmp_path / "s1full" / "checkpoint-2")  # a full stage-1 checkpoint is a model: allowed
    assert plan_start({"model": str(full)}, None, tmp_path / "out", defaults={}).model == str(full)


def test_the_stage_2_recipe_says_to_start_from_stage_1_with_init_from():
    text = (REPO / "configs" / "stage_2_llm_lora.yaml").read_text()
    assert "set run.init_from to the stage-1 checkpoint" in text and "set model.model to the stage-1" not in text


def test_a_run_directory_as_init_from_names_its_newest_whole_checkpoint(tmp_path):
    """`run.init_from: runs/stage1` (the stage-1 output_dir, not a checkpoint) said only what a checkpoint is."""
    base = _model(tmp_path / "model")
    run = tmp_path / "s1"
    for step in (2, 4, 6):
        _adapter(run / f"checkpoint-{step}", base)
        if step != 6:  # checkpoint-6 was cut short: no trainer_state.json
            (run / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"it is a run directory: its newest whole checkpoint is "
                                          f"{run / 'checkpoint-4'}, set `run.init_from` to that"):
        _plan(tmp_path, run, base)
    with pytest.raises(ConfigError, match=r"\(config.json \+ \*.safetensors\)$"):
        _plan(tmp_path, _model(tmp_path / "empty"), base)  # a folder holding no checkpoint: no hint


@pytest.mark.parametrize("kind", ["full", "adapter"])
def test_a_warm_start_from_another_family_is_refused(tmp_path, kind):
    """A Qwen3.5 stage-1 result under a qwen3_vl config: ms-swift would build Qwen3-VL around its weights."""
    other = tmp_path / "q35"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen3_5"}))
    save_file({"a": torch.zeros(2)}, str(other / "model.safetensors"))
    start = other if kind == "full" else _adapter(tmp_path / "s1" / "checkpoint-2", other)
    ours = _model(tmp_path / "model")
    with pytest.raises(ConfigError, match=rf"is a qwen3_5 model \({other / 'config.json'}\), but `model.model_type` "
                                          rf"is qwen3_vl"):
        plan_start({"model": str(ours), "model_type": "qwen3_vl"}, str(start), tmp_path / "out", defaults={})
    plan = plan_start({"model": str(ours), "model_type": "qwen3_5"}, str(start), tmp_path / "out", defaults={})
    assert plan.model == (str(other) if kind == "full" else str(tmp_path / "out" / "init_merged"))
