"""A stage-3 (GRPO) config explains its mistakes before anything starts: keys checked against ms-swift's
RLHFArguments, a missing stage-2 start, an unknown reward (the valid ones listed), reward weights of the wrong
length, num_generations that does not divide the completions of a step, vLLM asked for and missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.config import ConfigError, load_project_config
from src.sft import main as sft_main
from src.training.grpo_checks import generation_batch, reinforcement_problems

REPO = Path(__file__).resolve().parents[1]
STAGE3 = str(REPO / "configs" / "stage_3_grpo.yaml")
STAGE2 = Path(__file__).resolve().parent  # an existing directory stands for the stage-2 checkpoint
START = {"run": {"init_from": str(STAGE2)}}


def stage3(tree, **sections):
    body = {**START, **sections}
    return load_project_config(tree(body, extends=[STAGE3, "base.yaml"]).config)


def test_a_stage_2_start_that_does_not_exist_is_named(tree):
    with pytest.raises(ConfigError, match="`run.init_from` = /nowhere/stage2: path does not exist"):
        load_project_config(tree({"run": {"init_from": "/nowhere/stage2"}}, extends=[STAGE3, "base.yaml"]).config)


def test_the_shipped_recipe_is_a_grpo_config_that_needs_only_its_start(tree):
    cfg = stage3(tree)
    assert cfg.reinforcement and cfg.swift["rlhf_type"] == "grpo"
    assert cfg.swift["max_completion_length"] == 2048  # dense answers: ms-swift's 512 cuts them off
    assert reinforcement_problems(cfg, world_size=1, vllm_installed=False) == []
    assert not load_project_config(tree().config).reinforcement  # an SFT config


def test_a_missing_stage_2_start_is_named(tree):
    cfg = load_project_config(tree(extends=[STAGE3, "base.yaml"]).config)
    (problem,) = reinforcement_problems(cfg, world_size=1, vllm_installed=False)
    assert "`run.init_from` is not set: stage 3 starts from a stage-2 result" in problem


def test_an_unknown_reward_lists_the_valid_ones(tree):
    cfg = stage3(tree, rlhf={"reward_funcs": ["grounding_f1", "grounding_recall"], "reward_weights": [1.0, 1.0]})
    (problem,) = reinforcement_problems(cfg, world_size=1, vllm_installed=False)
    assert "`rlhf.reward_funcs` names 'grounding_recall', which is not a reward; valid: grounding_format, " \
           "grounding_f1, grounding_iou, grounding_duplicates, grounding_count, grounding_ap50, toolbench" in problem
    assert "run.yaml" in problem  # the file that set it


def test_reward_weights_of_the_wrong_length(tree):
    cfg = stage3(tree, rlhf={"reward_weights": [1.0, 2.0]})
    (problem,) = reinforcement_problems(cfg, world_size=1, vllm_installed=False)
    assert "`rlhf.reward_weights` has 2 weight(s) for 5 reward(s) in `rlhf.reward_funcs`" in problem


@pytest.mark.parametrize(("world_size", "batch", "generations", "valid"), [
    (1, 8, 3, "2, 4, 8"), (2, 3, 4, "2, 3, 6"), (1, 1, 8, "none")])
def test_num_generations_must_divide_the_completions_of_a_step(tree, world_size, batch, generations, valid):
    cfg = stage3(tree, training={"per_device_train_batch_size": batch}, rlhf={"num_generations": generations})
    assert generation_batch(cfg.swift, world_size) == batch * world_size
    (problem,) = reinforcement_problems(cfg, world_size=world_size, vllm_installed=False)
    assert f"`rlhf.num_generations` = {generations} does not divide the {batch * world_size} completions" in problem
    assert f"valid num_generations: {valid}" in problem
    fixed = stage3(tree, training={"per_device_train_batch_size": batch, "gradient_accumulation_steps": generations},
                   rlhf={"num_generations": generations})
    assert reinforcement_problems(fixed, world_size=world_size, vllm_installed=False) == []


def test_vllm_asked_for_and_missing(tree):
    cfg = stage3(tree, rlhf={"use_vllm": True, "vllm_mode": "colocate"})
    (problem,) = reinforcement_problems(cfg, world_size=1, vllm_installed=False)
    assert "`rlhf.use_vllm` is true but vLLM is not installed" in problem
    assert reinforcement_problems(cfg, world_size=1, vllm_installed=True) == []


def test_rlhf_keys_are_ms_swift_s_own(tree):
    with pytest.raises(ConfigError) as err:
        stage3(tree, rlhf={"num_generation": 4})
    assert "unknown key `rlhf.num_generation`; did you mean `num_generations`" in str(err.value)
    with pytest.raises(ConfigError) as err:
        stage3(tree, training={"num_generations": 4})
    assert "unknown key `training.num_generations`; it is an RLHF field: set it in `rlhf:`" in str(err.value)
    with pytest.raises(ConfigError, match="`rlhf.temperature` and `training.temperature` both set"):
        stage3(tree, training={"temperature": 0.7})  # the recipe sets rlhf.temperature


def test_the_entry_refuses_a_bad_stage_3_config_before_anything_starts(tree, capsys):
    t = tree({**START, "rlhf": {"reward_funcs": ["nope"], "reward_weights": [1.0]}}, extends=[STAGE3, "base.yaml"])
    assert sft_main(["--config", str(t.config)]) == 2
    assert "`rlhf.reward_funcs` names 'nope', which is not a reward" in capsys.readouterr().err
    assert not t.output_dir.exists()


def test_an_evaluation_batch_that_num_generations_does_not_divide(tree):
    cfg = stage3(tree, training={"eval_strategy": "steps", "eval_steps": 2, "per_device_eval_batch_size": 1},
                 rlhf={"num_generations": 2}, custom={"val_jsonl": str(tree().val_jsonl)})
    (problem,) = reinforcement_problems(cfg, world_size=1, vllm_installed=False)
    assert "the 1 completions of an evaluation step" in problem and "`rlhf.num_generations_eval` (2" in problem
    assert reinforcement_problems(cfg, world_size=2, vllm_installed=False) == []  # 2 processes x 1


def test_an_rlhf_section_without_its_method_is_refused(tree):
    with pytest.raises(ConfigError, match="`rlhf:` is set but `rlhf.rlhf_type` is not"):
        load_project_config(tree({"rlhf": {"beta": 0.1}}).config)


def test_a_scheme_whose_answers_hold_no_boxes_is_refused(tree):
    cfg = stage3(tree, prompts={"scheme": "summary"})
    (problem,) = reinforcement_problems(cfg, world_size=1, vllm_installed=False)
    assert "`prompts.scheme` = 'summary'" in problem and "no boxes to reward" in problem


def test_on_cpu_the_grpo_bounds_shorten_the_shipped_recipe_and_say_why(tree, capsys):
    from src.config import CPU_GRPO_OVERLAY
    from src.config.__main__ import main as config_main
    from src.config.report import dump_resolved_yaml, format_overrides

    t = tree(START, extends=[STAGE3, "base.yaml"])
    cfg = load_project_config(t.config, on_cpu=True)
    changed = {o.key: o for o in cfg.merged.overrides if o.origin.file == CPU_GRPO_OVERLAY}
    assert {key: (o.before, o.after) for key, o in changed.items()} == {
        "rlhf.num_generations": (8, 4), "rlhf.max_completion_length": (2048, 1024),
        "training.per_device_train_batch_size": (8, 4)}
    assert cfg.swift["num_generations"] == 4 and cfg.swift["max_completion_length"] == 1024
    assert cfg.swift["per_device_train_batch_size"] == 4
    assert reinforcement_problems(cfg, world_size=1, vllm_installed=False) == []  # still divisible
    assert reinforcement_problems(cfg, world_size=2, vllm_installed=False) == []
    text = format_overrides(cfg.merged.overrides)
    assert f"rlhf.num_generations: 8 -> 4   # {CPU_GRPO_OVERLAY}:" in text
    assert "CPU rollouts run token by token" in changed["rlhf.max_completion_length"].reason()
    assert "one prompt's group" in changed["training.per_device_train_batch_size"].reason()
    # Kept in resolved_config.yaml, which reloads alone (no overlay) to the same run.
    resolved = dump_resolved_yaml(cfg.merged, t.config.parent / "resolved.yaml").read_text()
    assert "#   rlhf.max_completion_length: 2048 -> 1024" in resolved
    assert load_project_config(t.config.parent / "resolved.yaml").swift == cfg.swift
    # `python -m src.config get --device cpu` resolves what `--device cpu` trains with; without it, the recipe.
    assert config_main(["get", "--config", str(t.config), "--device", "cpu", "rlhf.num_generations"]) == 0
    assert config_main(["get", "--config", str(t.config), "rlhf.num_generations"]) == 0
    assert capsys.readouterr().out.split() == ["4", "8"]
    assert load_project_config(t.config).swift["max_completion_length"] == 2048  # on a GPU: the recipe's


def test_the_grpo_bounds_never_lengthen_and_never_touch_sft(tree):
    from src.config import CPU_GRPO_OVERLAY

    short = stage3(tree, training={"per_device_train_batch_size": 2}, rlhf={"num_generations": 2,
                                                                             "max_completion_length": 24})
    on_cpu = load_project_config(short.merged.files[-1], on_cpu=True)
    assert on_cpu.swift["num_generations"] == 2 and on_cpu.swift["max_completion_length"] == 24
    assert on_cpu.swift["per_device_train_batch_size"] == 2
    assert not [o for o in on_cpu.merged.overrides if o.origin.file == CPU_GRPO_OVERLAY]
    sft = load_project_config(tree().config, on_cpu=True)
    assert CPU_GRPO_OVERLAY not in sft.merged.files and "rlhf" not in sft.merged.values
    assert sft.merged.overrides == []


def test_an_upper_bound_that_is_not_a_number_is_refused(tmp_path, tree):
    from src.config.loader import apply_overlay, load_merged_config

    bounds = tmp_path / "bounds.yaml"
    bounds.write_text("rlhf:\n  num_generations: 4\n  use_vllm: false\n")
    merged = load_merged_config(tree(START, extends=[STAGE3, "base.yaml"]).config)
    with pytest.raises(ConfigError, match=r"bounds.yaml:3: `rlhf.use_vllm` = false: an upper bound must be a number"):
        apply_overlay(merged, bounds, at_most=True)


def test_a_nan_inside_a_list_is_refused_with_its_index_and_line(tree):
    t = tree({**START, "rlhf": {"reward_weights": [float("nan"), 1.0, 1.0, 1.0, 1.0]}}, extends=[STAGE3, "base.yaml"])
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config)
    line = t.config.read_text().splitlines().index("  reward_weights:") + 1
    assert f"{t.config.resolve()}:{line}: `rlhf.reward_weights[0]` = nan: not a finite number" in str(err.value)


@pytest.mark.parametrize(("key", "value", "allowed"), [("temperature", 0.0, "> 0"), ("beta", -0.1, ">= 0")])
def test_stage_3_temperature_and_beta_ranges(tree, key, value, allowed):
    with pytest.raises(ConfigError, match=rf"run.yaml:\d+: `rlhf.{key}` = {value}: out of range for stage 3; "
                                          rf"allowed: {allowed}"):
        stage3(tree, rlhf={key: value})


def test_sft_keeps_temperature_zero_for_greedy_evaluation(tree):
    assert load_project_config(tree({"training": {"temperature": 0.0}}).config).swift["temperature"] == 0.0
