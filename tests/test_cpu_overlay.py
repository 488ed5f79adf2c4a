"""`gpus=cpu` on any config: the keys of configs/cpu.yaml merged on top of the whole chain, each change
listed with the reason written on its line, and kept in resolved_config.yaml."""

from __future__ import annotations

import pytest

from src.config import CPU_OVERLAY, ConfigError, load_project_config, to_sft_kwargs
from src.config.report import dump_resolved_yaml, format_overrides
from tests.config_helpers import CONFIGS, make_fake_model, write_yaml


@pytest.fixture
def gpu_config(tmp_path, data_dir):
    """The stage-2 GPU recipe (bf16) with packing asked for and a learning rate of the user's own."""
    model = make_fake_model(tmp_path / "model")
    return write_yaml(tmp_path / "run.yaml", {
        "extends": str(CONFIGS / "stage_2_llm_lora.yaml"),
        "model": {"model": str(model)},
        "custom": {"train_jsonl": str(data_dir / "train.jsonl")},
        "training": {"output_dir": str(tmp_path / "out"), "learning_rate": 5.0e-4, "packing": True,
                     "lazy_tokenize": False, "bf16": True},
    })


def test_the_overlay_changes_only_what_cpu_needs_and_says_why(gpu_config):
    with pytest.raises(ConfigError, match="needs a flash-attention"):
        load_project_config(gpu_config)  # as it is, packing cannot run here
    cfg = load_project_config(gpu_config, on_cpu=True)
    kwargs = to_sft_kwargs(cfg)
    assert kwargs["torch_dtype"] == "float32" and kwargs["use_cpu"] is True
    assert kwargs["bf16"] is False and kwargs["fp16"] is False and kwargs["packing"] is False
    assert kwargs["learning_rate"] == 5.0e-4 and kwargs["tuner_type"] == "lora"  # the user's chain is kept
    changed = {o.key: o for o in cfg.merged.overrides}
    assert changed["model.torch_dtype"].before == "bfloat16" and changed["model.torch_dtype"].after == "float32"
    assert changed["training.packing"].before is True and changed["training.bf16"].before is True
    assert "flash attention" in changed["training.packing"].reason()
    assert changed["training.packing"].origin.file == CPU_OVERLAY
    assert "model.model" not in changed and "training.learning_rate" not in changed
    text = format_overrides(cfg.merged.overrides)
    assert 'training.packing: true -> false   # ' in text and f"{CPU_OVERLAY}:" in text


def test_a_config_already_on_cpu_is_left_as_it_is(tree):
    cfg = load_project_config(tree().config, on_cpu=True)  # the test tree extends configs/cpu.yaml
    assert cfg.merged.overrides == []


def test_the_resolved_config_keeps_the_overrides_and_reloads_alone(gpu_config, tmp_path):
    cfg = load_project_config(gpu_config, on_cpu=True)
    resolved = dump_resolved_yaml(cfg.merged, tmp_path / "resolved.yaml")
    text = resolved.read_text()
    assert "# CPU overrides" in text and "#   model.torch_dtype: \"bfloat16\" -> \"float32\"" in text
    again = load_project_config(resolved)
    assert to_sft_kwargs(again) == to_sft_kwargs(cfg)


STAGE3 = str(CONFIGS / "stage_3_grpo.yaml")


@pytest.mark.parametrize(("body", "extends", "fragment"), [
    pytest.param({"env": "lots"}, "base.yaml", "`env` must be a mapping of NAME: value, got 'lots'",
                 id="mapping-over-a-scalar"),
    pytest.param({"run": {"init_from": str(CONFIGS)}, "rlhf": {"num_generations": "eight"}}, [STAGE3, "base.yaml"],
                 "`rlhf.num_generations` = 'eight' has the wrong type", id="bound-over-a-string"),
    pytest.param({"run": {"init_from": str(CONFIGS)}, "rlhf": {"max_completion_length": {"a": 1}}},
                 [STAGE3, "base.yaml"], "`rlhf.max_completion_length` = {'a': 1} has the wrong type",
                 id="bound-over-a-mapping"),
])
def test_the_cpu_overlay_hides_no_invalid_value(tree, body, extends, fragment):
    """gpus=cpu refuses what the GPU run refuses: no bound replaces a non-number, no mapping a non-mapping."""
    config = tree(body, extends=extends).config
    for on_cpu in (False, True):
        with pytest.raises(ConfigError) as err:
            load_project_config(config, on_cpu=on_cpu)
        assert fragment in str(err.value), (on_cpu, str(err.value))


def test_a_nan_bound_value_is_left_for_validation(tree):
    t = tree({"run": {"init_from": str(CONFIGS)}, "rlhf": {"num_generations": float("nan")}},
             extends=[STAGE3, "base.yaml"])
    with pytest.raises(ConfigError, match="`rlhf.num_generations`"):
        load_project_config(t.config, on_cpu=True)
