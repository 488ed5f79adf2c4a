"""A run is resolved once (src/training/resolve.py): one step from the config file to the validated config,
ms-swift's complete arguments, the parsed augmentation, the builder and the image settings, with every rule
(config, data layer, stage 3) reported together."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.config import ConfigError, load_project_config, to_sft_kwargs
from src.datasets.augment import AugmentOp
from src.training.resolve import resolve_run, with_start
from src.training.swift_plugin import VISION_ENV_KEYS, plugin_path

STAGE3 = str(Path(__file__).resolve().parents[1] / "configs" / "stage_3_grpo.yaml")


@pytest.fixture
def vision_env(monkeypatch):
    """No vision variable set before the test, and each put back as it was after it (the config's `env:` sets
    them in the process)."""
    for key in VISION_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)


def test_one_step_gives_every_piece_of_a_run(tree, vision_env):
    t = tree({"prompts": {"system": "Find boxes."},
              "custom": {"augment": [{"op": "hflip", "p": 0.5}], "augment_prob": 0.5},
              "env": {"IMAGE_MAX_TOKEN_NUM": 96}})
    run = resolve_run(t.config)
    assert run.cfg.custom.augment_prob == 0.5
    assert run.augment_ops == [AugmentOp(name="hflip", p=0.5, params={})]
    assert run.image_settings == {"IMAGE_MAX_TOKEN_NUM": "96"}  # the config's `env:`, applied by the same step
    assert run.builder.scheme.system == "Find boxes." and run.builder.answers_with_geometry
    args = run.swift_args
    # the config's translation, completed with the run's own: the system prompt and the image budget's plugin
    assert {k: v for k, v in args.items() if k not in ("system", "external_plugins")} == to_sft_kwargs(run.cfg)
    assert args["system"] == "Find boxes."
    assert args["external_plugins"] == [str(plugin_path(t.output_dir, {"IMAGE_MAX_TOKEN_NUM": "96"}))]
    started = with_start(args, model="/m", resume_from_checkpoint=None)
    assert (started["model"], started["resume_from_checkpoint"]) == ("/m", None) and args["model"] != "/m"


def test_without_checked_paths_there_are_no_arguments_for_ms_swift(tree, vision_env):
    """infer and rows read a config whose data need not exist here: the arguments of a training are not made."""
    run = resolve_run(tree({"custom": {"train_jsonl": "shards/*.jsonl"}}).config, check_paths=False)
    assert run.swift_args is None and run.builder is run.preprocessor.builder


def test_every_rule_is_reported_in_the_same_error(tree, vision_env):
    """A data-layer rule (augmentation of a summary) and a stage-3 rule (its scheme holds no geometry) at once."""
    t = tree({"run": {"init_from": str(Path(__file__).parent)}, "prompts": {"scheme": "summary"},
              "custom": {"augment": [{"op": "hflip", "p": 0.5}], "augment_prob": 0.5}},
             extends=[STAGE3, "base.yaml"])
    with pytest.raises(ConfigError) as err:
        resolve_run(t.config, world_size=1)
    text = str(err.value)
    assert "the summary scheme trains on each record's `summary` text" in text
    assert "`prompts.scheme` = 'summary': its answers hold no boxes to reward" in text
    with pytest.raises(ConfigError) as without_job:  # not a training job: stage 3's own rules do not apply
        resolve_run(t.config)
    assert "hold no boxes to reward" not in str(without_job.value)


def test_the_system_prompt_has_one_spelling(tree):
    t = tree("template:\n  system: Be brief.\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:3: `template\.system` = 'Be brief\.': .*write `prompts: "
                                          r"\{system: 'Be brief\.'\}` instead"):
        load_project_config(t.config)
