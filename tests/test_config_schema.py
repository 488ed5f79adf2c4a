"""Typed, strict config: every bad input with an actionable message, the type checker, the mapping to
`SftArguments` kwargs, the resolved_config.yaml round trip, and the shipped configs."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from src.config import ConfigError, load_project_config, to_sft_kwargs
from src.config.loader import load_merged_config
from src.config.report import dump_resolved_yaml
from src.config.schema import validate_config
from src.config.types import checker_for, describe
from tests.config_helpers import CONFIGS, CPU_YAML, make_fake_model, write_yaml

HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def typed(path: Path):
    """The typed config without the rule pass (rules that need packages absent here are tested apart)."""
    return validate_config(load_merged_config(path))


# ---------------------------------------------------------------------------- bad input

# (run.yaml body below its `extends` line, fragments that must all appear in the error, extra files,
# the run.yaml's extends). Fragments are formatted with {root} and {config} (run.yaml), both absolute.
BAD_INPUTS = [
    pytest.param("trainig:\n  seed: 1\n", ["{config}:2: unknown section `trainig`", "did you mean `training`?"],
                 {}, "base.yaml", id="unknown-section"),
    pytest.param("training:\n  lerning_rate: 0.1\n",
                 ["{config}:3: unknown key `training.lerning_rate`", "did you mean `learning_rate`", "SftArguments"],
                 {}, "base.yaml", id="unknown-swift-key"),
    pytest.param("custom:\n  emit_nrom: none\n",
                 ["{config}:3: unknown key `custom.emit_nrom`; did you mean `emit_norm`?",
                  "(allowed: train_jsonl, val_jsonl, emit_norm, images_per_user_turn"],
                 {}, "base.yaml", id="unknown-own-key"),
    pytest.param("deepspeed:\n  zero:\n    stage: 2\n", ["{config}:3: unknown key `deepspeed.zero`"],
                 {}, "base.yaml", id="unknown-nested-key"),
    pytest.param("", ["{root}/mid.yaml:3: unknown key `run.overwrit`; did you mean `overwrite`?"],
                 {"mid.yaml": "extends: base.yaml\nrun:\n  overwrit: true\n"}, "mid.yaml",
                 id="unknown-key-names-the-file-that-introduced-it"),
    pytest.param("tuner:\n  trian_type: full\n", ["{config}:3: unknown key `tuner.trian_type`", "`train_type`"],
                 {}, "base.yaml", id="train-type-misspelt"),
    pytest.param("training:\n  num_train_epochs: three\n",
                 ["{config}:3: `training.num_train_epochs` = 'three' has the wrong type: expected float, got str"],
                 {}, "base.yaml", id="wrong-type-float"),
    pytest.param("tuner:\n  freeze_llm: maybe\n",
                 ["`tuner.freeze_llm` = 'maybe' has the wrong type: expected bool, got str"],
                 {}, "base.yaml", id="wrong-type-bool"),
    pytest.param("training:\n  per_device_train_batch_size: true\n",
                 ["`training.per_device_train_batch_size` = True has the wrong type: expected int, got bool"],
                 {}, "base.yaml", id="bool-is-not-int"),
    pytest.param("custom:\n  images_per_user_turn: 1.5\n",
                 ["{config}:3: `custom.images_per_user_turn` = 1.5 has the wrong type: expected int, got float"],
                 {}, "base.yaml", id="wrong-type-own-section"),
    pytest.param("custom:\n  answer_only_logits: maybe\n",
                 ["{config}:3: `custom.answer_only_logits` = 'maybe' has the wrong type: expected bool, got str"],
                 {}, "base.yaml", id="answer-only-logits-not-bool"),
    pytest.param("tuner:\n  target_modules: all-linear\n",
                 ["`tuner.target_modules` = 'all-linear' has the wrong type: expected List[str], got str"],
                 {}, "base.yaml", id="wrong-type-list"),
    pytest.param("global_max_length: big\n",
                 ["{config}:2: `global_max_length` = 'big' has the wrong type: expected Optional[int], got str"],
                 {}, "base.yaml", id="wrong-type-global-max-length"),
    pytest.param("env:\n  A: [1]\n", ["{config}:3: `env.A` = [1]: expected a string or number"],
                 {}, "base.yaml", id="env-value-not-scalar"),
    pytest.param("custom: 5\n", ["{config}:2: `custom` must be a mapping, got 5"], {}, "base.yaml",
                 id="own-section-not-a-mapping"),
    pytest.param("training: [1]\n", ["{config}:2: `training` must be a mapping, got [1]"], {}, "base.yaml",
                 id="swift-section-not-a-mapping"),
    pytest.param("prompts: null\n", ["{config}:2: section `prompts` is set to null here"], {}, "base.yaml",
                 id="section-null"),
    pytest.param("eval: null\n", ["{config}:2: section `eval` is set to null", "remove the line"], {}, "base.yaml",
                 id="eval-section-null"),
    pytest.param("model:\n  model: m\n", ["section `prompts` is missing: extend configs/base.yaml"],
                 {"m/config.json": "{}"}, [], id="section-missing"),
    pytest.param("custom:\n  train_jsonl: t.jsonl\n",
                 ["`custom.emit_norm` is missing: set it in your config or extend configs/base.yaml"],
                 {"t.jsonl": ""}, [], id="own-key-missing-without-base"),
    pytest.param("custom:\n  emit_norm: norm10\n",
                 ["{config}:3: `custom.emit_norm` = 'norm10'", "Literal['none', 'norm100', 'norm1000']"],
                 {}, "base.yaml", id="emit-norm"),
    pytest.param("data:\n  bad_records: ignore\n", ["{config}:3: `custom.bad_records` = 'ignore'", "'error', 'skip'"],
                 {}, "base.yaml", id="bad-records-policy"),
    pytest.param("prompts:\n  scheme: chat\n", ["`prompts.scheme` = 'chat'", "valid: dense, grounding, summary"],
                 {}, "base.yaml", id="prompt-scheme"),
    pytest.param("custom:\n  train_jsonl: null\n",
                 ["{config}:3: `custom.train_jsonl` is required and has no value: set it in your config"],
                 {}, "base.yaml", id="required-train-jsonl"),
    pytest.param("custom:\n  train_jsonl: []\n", ["{config}:3: `custom.train_jsonl` = []: no training data"],
                 {}, "base.yaml", id="train-jsonl-empty-list"),
    pytest.param("model:\n  model: null\n", ["{config}:3: `model.model` is required"], {}, "base.yaml",
                 id="required-model"),
    pytest.param("training:\n  output_dir: null\n", ["{config}:3: `training.output_dir` is required"], {},
                 "base.yaml", id="required-output-dir"),
    pytest.param("model:\n  model: nope\n",
                 ["{config}:3: `model.model` = {root}/nope: path does not exist", "relative to the YAML"],
                 {}, "base.yaml", id="model-path-missing"),
    pytest.param("model:\n  model: base.yaml\n", ["`model.model` = {root}/base.yaml: path does not exist"],
                 {}, "base.yaml", id="model-path-is-a-file"),
    pytest.param("custom:\n  train_jsonl: none.jsonl\n", ["`custom.train_jsonl` = {root}/none.jsonl: path does not"],
                 {}, "base.yaml", id="train-jsonl-missing"),
    pytest.param("custom:\n  val_jsonl: sub\n", ["{config}:3: `custom.val_jsonl` = {root}/sub: path does not"],
                 {"sub/x": ""}, "base.yaml", id="val-jsonl-is-a-dir"),
    pytest.param("tuner:\n  resume_from_checkpoint: out/checkpoint-9\n",
                 ["`tuner.resume_from_checkpoint` = {root}/out/checkpoint-9: path does not exist"],
                 {}, "base.yaml", id="resume-path-missing"),
    pytest.param("training:\n  resume_from_checkpoint: ckpt\n",
                 ["{config}:3: `training.resume_from_checkpoint` = {root}/ckpt: path does not exist"],
                 {}, "base.yaml", id="resume-in-training-missing"),
    pytest.param("model:\n  adapters: [ad]\n", ["{config}:3: `model.adapters` = {root}/ad: path does not exist"],
                 {}, "base.yaml", id="adapters-in-model-missing"),
    pytest.param("rlhf:\n  rlhf_type: grpo\n  ref_model: ref\n",
                 ["{config}:4: `rlhf.ref_model` = {root}/ref: path does not exist"],
                 {}, "base.yaml", id="ref-model-missing"),
    pytest.param("rlhf:\n  rlhf_type: grpo\n  reward_model: [rm]\n",
                 ["{config}:4: `rlhf.reward_model` = {root}/rm: path does not exist", "a local model directory"],
                 {}, "base.yaml", id="reward-model-missing"),
    pytest.param("rlhf:\n  rlhf_type: grpo\n  teacher_model: base.yaml\n",
                 ["{config}:4: `rlhf.teacher_model` = {root}/base.yaml: path does not exist"],
                 {}, "base.yaml", id="teacher-model-is-a-file"),
    pytest.param("training:\n  output_dir: notes.txt\n",
                 ["{config}:3: `training.output_dir` = {root}/notes.txt: is a file, not a directory"],
                 {"notes.txt": "x"}, "base.yaml", id="output-dir-is-a-file"),
    pytest.param("training:\n  logging_dir: tb.txt\n",
                 ["{config}:3: `training.logging_dir` = {root}/tb.txt: is a file, not a directory"],
                 {"tb.txt": "x"}, "base.yaml", id="logging-dir-is-a-file"),
    pytest.param("training:\n  packing: true\n",
                 ["{config}:3: `packing: true` needs a flash-attention implementation, but `attn_impl` is 'sdpa'",
                  "set model.attn_impl to one of flash_attn"],
                 {}, "base.yaml", id="packing-with-sdpa"),
    pytest.param("model:\n  attn_impl: flash_attn\ntraining:\n  packing: true\n",
                 ["{config}:5: `packing: true` with attn_impl=flash_attn needs the module(s) flash_attn",
                  "not installed", "set `training.packing: false`"],
                 {}, "base.yaml", id="packing-without-flash-attn",
                 marks=pytest.mark.skipif(HAS_FLASH_ATTN, reason="flash_attn is installed here")),
    pytest.param("model:\n  attn_impl: flash_attention_2\ntraining:\n  padding_free: true\n",
                 ["`padding_free: true` with attn_impl=flash_attention_2", "`training.padding_free: false`"],
                 {}, "base.yaml", id="padding-free-without-flash-attn",
                 marks=pytest.mark.skipif(HAS_FLASH_ATTN, reason="flash_attn is installed here")),
    pytest.param("training:\n  check_model: true\n", ["{config}:3: `check_model` must be false", "offline"],
                 {}, "base.yaml", id="check-model-true"),
    pytest.param("training:\n  strict: false\n", ["{config}:3: `strict` must be true", "custom.bad_records: skip"],
                 {}, "base.yaml", id="strict-false"),
    pytest.param("custom:\n  emit_norm: none\ndata:\n  emit_norm: norm100\n",
                 ["{config}: `data.emit_norm` and `custom.emit_norm` set the same value; keep one"],
                 {}, "base.yaml", id="data-and-custom-conflict"),
    pytest.param("data:\n  emit_norm: none\ncustom:\n  emit_norm: norm100\n",
                 ["`data.emit_norm` and `custom.emit_norm` set the same value; keep one"],
                 {}, "base.yaml", id="data-before-custom-conflict"),
    pytest.param("tuner:\n  tuner_type: full\n  train_type: lora\n",
                 ["`tuner.tuner_type` and `tuner.train_type` set the same value; keep one"],
                 {}, "base.yaml", id="tuner-type-alias-conflict"),
    pytest.param("training:\n  dataset: [x.jsonl]\n",
                 ["{config}:3: `training.dataset` is set by the project: use `custom.train_jsonl` instead"],
                 {}, "base.yaml", id="project-owned-field"),
    pytest.param("training:\n  deepspeed: zero2\n", ["`training.deepspeed` is set by the project: use `deepspeed."],
                 {}, "base.yaml", id="project-owned-deepspeed"),
    pytest.param("template:\n  system: Be brief.\n",
                 ["{config}:3: `template.system` = 'Be brief.': the project writes ms-swift's `system` from "
                  "`prompts.system`", "write `prompts: {{system: 'Be brief.'}}` instead and remove `template.system`"],
                 {}, "base.yaml", id="template-system-refused"),
    pytest.param("model:\n  max_length: 512\ntemplate:\n  max_length: 512\n",
                 ["{config}:5: `template.max_length` and `model.max_length` both set ms-swift's `max_length`"],
                 {}, "base.yaml", id="field-set-twice"),
    pytest.param("global_max_length: 256\ntemplate:\n  max_length: 512\n",
                 ["{config}:4: `template.max_length` = 512 disagrees with `global_max_length` = 256 ({config}:2)"],
                 {}, "base.yaml", id="global-max-length-disagrees"),
    pytest.param("global_max_length: 2048\nmodel:\n  max_model_len: 8192\n",
                 ["{config}:4: `model.max_model_len` = 8192 disagrees with `global_max_length` = 2048 ({config}:2)"],
                 {}, "base.yaml", id="global-max-length-disagrees-with-max-model-len"),
    pytest.param("global_max_length: 0\n", ["{config}:2: `global_max_length` must be positive, got 0"],
                 {}, "base.yaml", id="global-max-length-zero"),
    pytest.param("custom:\n  images_per_user_turn: 0\n", ["`custom.images_per_user_turn` must be >= 1, got 0"],
                 {}, "base.yaml", id="images-per-turn-zero"),
    pytest.param("custom:\n  augment_prob: 1.5\n", ["{config}:3: `custom.augment_prob` must be in [0, 1], got 1.5"],
                 {}, "base.yaml", id="augment-prob-range"),
    pytest.param("deepspeed:\n  enabled: true\n", ["{config}:3: `deepspeed.enabled: true` needs `deepspeed.config`"],
                 {}, "base.yaml", id="deepspeed-without-config"),
    pytest.param("deepspeed:\n  enabled: true\n  config: zero2\n",
                 ["`deepspeed.enabled: true` but the `deepspeed` package is not installed"],
                 {}, "base.yaml", id="deepspeed-not-installed"),
    pytest.param("deepspeed:\n  enabled: true\n  config: ds/none.json\n",
                 ["{config}:4: `deepspeed.config` = {root}/ds/none.json: file does not exist"],
                 {}, "base.yaml", id="deepspeed-json-missing"),
    pytest.param("deepspeed:\n  enabled: true\n  config: ds.json\n",
                 ["{root}/ds.json:3:1: invalid JSON in the DeepSpeed config"],
                 {"ds.json": '{\n  "a": 1,\n}\n'}, "base.yaml", id="deepspeed-json-invalid"),
    pytest.param("deepspeed:\n  enabled: true\n  config: zero9\n",
                 ["`deepspeed.config` = 'zero9' is neither a preset (zero0, zero1, zero2"],
                 {}, "base.yaml", id="deepspeed-unknown-preset"),
    pytest.param("", ["{config}:1: extends: file not found: nope.yaml", "resolved to {root}/nope.yaml"],
                 {}, "nope.yaml", id="extends-missing"),
    pytest.param("", ["extends cycle: {config} -> {root}/x.yaml -> {config}"],
                 {"x.yaml": "extends: run.yaml\n"}, "x.yaml", id="extends-cycle"),
    pytest.param("training:\n  seed: [1\n", ["{config}:4:1: invalid YAML: ", "expected ',' or ']'"],
                 {}, "base.yaml", id="invalid-yaml"),
    pytest.param("training:\n  seed: 1\nmodel:\n  attn_impl: sdpa\ntraining:\n  seed: 2\n",
                 ["{config}:6: key `training` is also set at line 2", "keep one"],
                 {}, "base.yaml", id="duplicate-section"),
    pytest.param("training:\n  seed: 1\n  seed: 2\n", ["{config}:4: key `training.seed` is also set at line 3"],
                 {}, "base.yaml", id="duplicate-key"),
    pytest.param("on: 3\n", ["{config}:2: YAML 1.1 reads the key `on` as true, not as a name; quote it"],
                 {}, "base.yaml", id="key-read-as-bool"),
    pytest.param("training:\n  1: x\n", ["{config}:3: YAML 1.1 reads the key `1` as the integer 1"],
                 {}, "base.yaml", id="key-read-as-int"),
    pytest.param("env:\n  null: 3\n", ["{config}:3: YAML 1.1 reads the key `null` as null"],
                 {}, "base.yaml", id="key-read-as-null"),
    pytest.param("tuner:\n  train_type: loar\n",
                 ["{config}:3: `tuner.train_type` = 'loar' is not a tuner ms-swift supports; did you mean `lora`",
                  "(allowed: adalora,", " full,"], {}, "base.yaml", id="train-type-choice"),
    pytest.param("training:\n  save_strategy: epoc\n",
                 ["{config}:3: `training.save_strategy` = 'epoc' is not a value transformers takes for "
                  "`save_strategy`; did you mean `epoch`?", "(allowed: no, steps, epoch, best)"],
                 {}, "base.yaml", id="save-strategy-choice"),
    pytest.param("training:\n  eval_strategy: step\n",
                 ["{config}:3: `training.eval_strategy` = 'step'", "did you mean `steps`",
                  "(allowed: no, steps, epoch)"],
                 {}, "base.yaml", id="eval-strategy-choice"),
    pytest.param("training:\n  lr_scheduler_type: cosin\n",
                 ["{config}:3: `training.lr_scheduler_type` = 'cosin'", "did you mean `cosine`", "warmup_stable_decay"],
                 {}, "base.yaml", id="lr-scheduler-choice"),
]


@pytest.mark.parametrize(("body", "fragments", "files", "extends"), BAD_INPUTS)
def test_bad_input_is_refused_with_an_actionable_message(tree, tmp_path, monkeypatch, body, fragments, files,
                                                         extends):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as on a machine without the package (the tests install it)
    for name, text in files.items():
        write_yaml(tmp_path / name, text)
    t = tree(body, extends=extends)
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config)
    message = str(err.value)
    for fragment in fragments:
        assert fragment.format(root=t.root.resolve(), config=t.config.resolve()) in message, message


def test_the_valid_tree_loads(tree):
    t = tree()
    cfg = load_project_config(t.config)
    assert cfg.swift["model"] == str(t.model)
    assert cfg.custom.train_jsonl == str(t.train_jsonl)
    assert cfg.custom.val_jsonl == str(t.val_jsonl)
    assert cfg.swift["output_dir"] == str(t.output_dir)


def test_several_type_problems_are_reported_at_once(tree):
    t = tree("""
        trainig: {}
        custom:
          emit_norm: bad
          images_per_user_turn: x
        tuner:
          trian_type: full
        """)
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config)
    problems = err.value.problems
    assert len(problems) == 4, problems
    for fragment in ("unknown section `trainig`", "`custom.emit_norm` = 'bad'", "`custom.images_per_user_turn` = 'x'",
                     "unknown key `tuner.trian_type`"):
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)
    assert str(err.value) == "\n".join(problems)


def test_several_rule_problems_are_reported_at_once(tree):
    t = tree("""
        model:
          model: missing_model
        training:
          check_model: true
          strict: false
        custom:
          augment_prob: -0.1
        """)
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config)
    problems = err.value.problems
    assert len(problems) == 4, problems
    for fragment in ("`check_model` must be false", "`strict` must be true", "`custom.augment_prob` must be in",
                     "`model.model` = "):
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)


def test_an_empty_train_jsonl_is_allowed_with_a_cached_dataset(tree):
    cfg = load_project_config(tree("custom:\n  train_jsonl: []\n  cached_dataset: cache\n").config)
    assert cfg.custom.train_jsonl == []


def test_ms_swift_path_fields_resolve_beside_their_yaml_in_any_section(tree, tmp_path, monkeypatch):
    t = tree("training:\n  resume_from_checkpoint: ckpt\nmodel:\n  adapters: [ad]\n"
             "rlhf:\n  rlhf_type: grpo\n  ref_model: ref\n")
    for name in ("ckpt", "ad", "ref"):
        (t.root / name).mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # another working directory: the paths stay beside the YAML
    cfg = load_project_config(t.config)
    root = t.root.resolve()
    assert cfg.swift["resume_from_checkpoint"] == str(root / "ckpt")
    assert cfg.swift["adapters"] == [str(root / "ad")] and cfg.swift["ref_model"] == str(root / "ref")
    assert load_project_config(tree("training:\n  resume_from_checkpoint: auto\n").config).swift[
        "resume_from_checkpoint"] == "auto"


def test_check_paths_false_skips_only_the_path_checks(tree):
    t = tree("model:\n  model: nope\ncustom:\n  train_jsonl: none.jsonl\n")
    cfg = load_project_config(t.config, check_paths=False)
    assert cfg.swift["model"] == str(t.root / "nope")
    t = tree("model:\n  model: nope\ntraining:\n  strict: false\n")
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config, check_paths=False)
    assert len(err.value.problems) == 1 and "`strict` must be true" in err.value.problems[0]


def test_integer_keys_inside_a_field_s_value_are_gpu_numbers(tree):
    """ms-swift's `max_memory` keys GPUs by number; the key check refused `0:` and its advice (quote it)
    would have named no device."""
    cfg = load_project_config(tree("model:\n  max_memory: {0: 20GiB, 1: 20GiB}\n").config)
    assert to_sft_kwargs(cfg)["max_memory"] == {0: "20GiB", 1: "20GiB"}
    with pytest.raises(ConfigError, match="reads the key `1` as the integer 1"):  # a field's name: still refused
        load_project_config(tree("model:\n  1: x\n").config)


def test_a_tuner_a_plugin_registers_is_not_refused(tree):
    """ms-swift looks the tuner up after importing `external_plugins`, which may add one to its map."""
    t = tree("tuner:\n  train_type: my_tuner\n  external_plugins: [plugin.py]\n")
    (t.config.parent / "plugin.py").write_text("# registers my_tuner in swift's tuners_map\n")
    assert to_sft_kwargs(load_project_config(t.config))["tuner_type"] == "my_tuner"


def test_aliases_are_accepted(tree):
    t = tree("data:\n  emit_norm: norm100\ntuner:\n  tuner_type: full\n")
    cfg = load_project_config(t.config)
    assert cfg.custom.emit_norm == "norm100"
    assert to_sft_kwargs(cfg)["tuner_type"] == "full"


def test_a_literal_field_whose_default_is_none_accepts_null(tree):
    t = tree("model:\n  quant_method: null\n")
    assert load_project_config(t.config).swift["quant_method"] is None


# ---------------------------------------------------------------------------- type checker


@pytest.mark.parametrize(("annotation", "value", "ok"), [
    ("Optional[int]", None, True),
    ("Optional[int]", 3, True),
    ("Optional[int]", True, False),
    ("Optional[int]", "3", False),
    ("Optional[int]", 3.0, False),
    ("typing.Optional[int]", 3, True),
    ("Literal['a', 'b']", "a", True),
    ("Literal['a', 'b']", "b", True),
    ("Literal['a', 'b']", "c", False),
    ("Literal['a', 'b']", None, False),
    ("Literal[1, 2, 'float8']", 1, True),
    ("Literal[1, 2, 'float8']", True, False),
    ("Literal[1, 2, 'float8']", 1.0, False),
    ("Literal[1, 2, 'float8']", "float8", True),
    ("List[str]", [], True),
    ("List[str]", ["a", "b"], True),
    ("List[str]", ["a", 1], False),
    ("List[str]", "a", False),
    ("list[int]", [1, 2], True),
    ("Optional[List[str]]", None, True),
    ("Optional[List[str]]", [None], False),
    ("dict | str | None", {}, True),
    ("dict | str | None", "zero2", True),
    ("dict | str | None", None, True),
    ("dict | str | None", 1, False),
    ("dict | str | None", [], False),
    ("SaveStrategy | str", "epoch", True),
    ("SaveStrategy | str", 5, True),  # an unknown name accepts anything: ms-swift still checks it
    ("Union[int, str]", "x", True),
    ("Union[int, str]", 1.5, False),
    ("float", 1, True),
    ("float", 1.5, True),
    ("float", True, False),
    ("float", "1e-4", False),
    ("int", 2, True),
    ("int", False, False),
    ("bool", False, True),
    ("bool", 0, False),
    ("str", "", True),
    ("str", None, False),
    ("Dict[str, Any]", {"a": 1}, True),
    ("Dict[str, Any]", [], False),
    ("Tuple[int, int]", [1, 2], True),
    ("Tuple[int, int]", "12", False),
    ("'int'", 1, True),
    ("'int'", "1", False),
    ("Callable[[int], int]", object(), True),
    ("not valid python (", 1, True),
])
def test_checker_for(annotation, value, ok):
    assert checker_for(annotation)(value) is ok


def test_describe_drops_the_typing_prefix():
    assert describe("typing.Optional[typing.List[str]]") == "Optional[List[str]]"
    assert describe("dict | str | None") == "dict | str | None"


# ---------------------------------------------------------------------------- mapping


def test_mapping_renames_train_type_and_adds_the_data_keys(tree):
    t = tree("tuner:\n  train_type: full\ntraining:\n  learning_rate: 0.5\n")
    cfg = load_project_config(t.config)
    kwargs = to_sft_kwargs(cfg)
    assert kwargs["tuner_type"] == "full"
    assert "train_type" not in kwargs
    assert kwargs["dataset"] == [str(t.train_jsonl)]
    assert kwargs["val_dataset"] == [str(t.val_jsonl)]
    assert kwargs["learning_rate"] == 0.5
    assert kwargs["model"] == str(t.model)
    assert kwargs["output_dir"] == str(t.output_dir)
    assert "deepspeed" not in kwargs
    assert "max_length" not in kwargs and "max_model_len" not in kwargs
    # our own keys never reach ms-swift
    for own in ("emit_norm", "train_jsonl", "scheme", "overwrite", "enabled", "global_max_length"):
        assert own not in kwargs
    assert "dataset" not in cfg.swift  # mapping does not write into the config


def test_mapping_without_val_gives_an_empty_val_dataset(tree):
    cfg = load_project_config(tree("custom:\n  val_jsonl: null\n").config)
    assert to_sft_kwargs(cfg)["val_dataset"] == []


def test_global_max_length_sets_max_length_and_max_model_len(tree):
    cfg = load_project_config(tree("global_max_length: 1024\n").config)
    kwargs = to_sft_kwargs(cfg)
    assert (kwargs["max_length"], kwargs["max_model_len"]) == (1024, 1024)


def test_global_max_length_may_agree_with_template_max_length(tree):
    cfg = load_project_config(tree("global_max_length: 512\ntemplate:\n  max_length: 512\n").config)
    assert to_sft_kwargs(cfg)["max_model_len"] == 512


def test_deepspeed_preset_maps_to_its_name(tree):
    cfg = typed(tree("deepspeed:\n  enabled: true\n  config: zero3\n").config)
    assert to_sft_kwargs(cfg)["deepspeed"] == "zero3"


def test_deepspeed_json_maps_to_an_absolute_path(tree, tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "z.json").write_text("{}")
    cfg = typed(tree("deepspeed:\n  enabled: true\n  config: ds/z.json\n").config)
    assert to_sft_kwargs(cfg)["deepspeed"] == str((tmp_path / "ds" / "z.json").resolve())


def test_deepspeed_disabled_ignores_its_config(tree):
    cfg = load_project_config(tree("deepspeed:\n  enabled: false\n  config: zero2\n").config)
    assert "deepspeed" not in to_sft_kwargs(cfg)


def test_env_values_become_strings(tree):
    cfg = load_project_config(tree("env:\n  OMP_NUM_THREADS: 2\n  RATIO: 0.5\n  NAME: x\n").config)
    assert cfg.env == {"IMAGE_MAX_TOKEN_NUM": "64", "OMP_NUM_THREADS": "2", "RATIO": "0.5", "NAME": "x"}


# ---------------------------------------------------------------------------- resolved_config.yaml


ROUND_TRIP_BODY = """
    global_max_length: 768
    data:
      emit_norm: norm100
      images_per_user_turn: 2
    tuner:
      tuner_type: full
      resume_from_checkpoint: auto
      freeze_llm: true
    training:
      learning_rate: 3.0e-5
      report_to: []
      lr_scheduler_kwargs: {min_lr: 1.0e-6}
    prompts:
      user: "Find {desc}."
    env:
      OMP_NUM_THREADS: 1
    """


@pytest.mark.parametrize("with_deepspeed", [False, True])
def test_resolved_config_alone_reproduces_the_kwargs(tree, tmp_path, monkeypatch, with_deepspeed):
    body = textwrap.dedent(ROUND_TRIP_BODY)
    if with_deepspeed:
        write_yaml(tmp_path / "ds.json", "{}")
        body += "deepspeed:\n  enabled: true\n  config: ./ds.json\n"
    t = tree(body)
    cfg = typed(t.config)
    if not with_deepspeed:
        assert load_project_config(t.config).swift == cfg.swift  # the rules accept it too
    out = dump_resolved_yaml(cfg.merged, tmp_path / "elsewhere" / "run" / "resolved_config.yaml")
    text = out.read_text()
    assert "extends" not in yaml.safe_load(text)
    for f in cfg.merged.files:
        assert f"#   {f}\n" in text
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = typed(out)
    assert again.merged.files == [out.resolve()]
    assert to_sft_kwargs(again) == to_sft_kwargs(cfg)
    assert (again.custom, again.prompts, again.deepspeed, again.run, again.env, again.global_max_length) == (
        cfg.custom, cfg.prompts, cfg.deepspeed, cfg.run, cfg.env, cfg.global_max_length)
    assert to_sft_kwargs(again)["tuner_type"] == "full"
    assert to_sft_kwargs(again)["max_model_len"] == 768


# ---------------------------------------------------------------------------- shipped configs


def test_base_yaml_alone_fails_only_on_required_values():
    with pytest.raises(ConfigError) as err:
        load_project_config(CONFIGS / "base.yaml", check_paths=False)
    assert err.value.problems
    for problem in err.value.problems:
        assert "is required and has no value" in problem, problem
        assert str(CONFIGS / "base.yaml") in problem


def test_base_yaml_alone_names_every_required_value():
    with pytest.raises(ConfigError) as err:
        load_project_config(CONFIGS / "base.yaml", check_paths=False)
    message = str(err.value)
    for key in ("custom.train_jsonl", "model.model", "training.output_dir"):
        assert f"`{key}` is required" in message


@pytest.fixture
def shipped_child(tmp_path, data_dir):
    """A child of a shipped config that sets the model, data and output."""
    def make(name: str) -> Path:
        model = make_fake_model(tmp_path / "m")
        return write_yaml(tmp_path / "child.yaml", {
            "extends": str(CONFIGS / name),
            "model": {"model": str(model)},
            "custom": {"train_jsonl": str(data_dir / "train.jsonl"), "val_jsonl": str(data_dir / "val.jsonl")},
            "training": {"output_dir": "out"},
        })
    return make


def test_stage_1_maps_to_full_tuning_of_the_aligner_only(shipped_child, tmp_path):
    kwargs = to_sft_kwargs(load_project_config(shipped_child("stage_1_full_aligner_only.yaml")))
    assert kwargs["tuner_type"] == "full"
    assert (kwargs["freeze_llm"], kwargs["freeze_vit"], kwargs["freeze_aligner"]) == (True, True, False)
    assert kwargs["output_dir"] == str((tmp_path / "out").resolve())
    assert kwargs["strict"] is True and kwargs["check_model"] is False


def test_stage_2_maps_to_lora_on_the_llm(shipped_child):
    kwargs = to_sft_kwargs(load_project_config(shipped_child("stage_2_llm_lora.yaml")))
    assert kwargs["tuner_type"] == "lora"
    assert kwargs["target_modules"] == ["all-linear"]
    assert (kwargs["freeze_llm"], kwargs["freeze_vit"]) == (False, True)


def test_cpu_config_maps_to_a_cpu_run(shipped_child):
    cfg = load_project_config(shipped_child("cpu.yaml"))
    kwargs = to_sft_kwargs(cfg)
    assert kwargs["use_cpu"] is True
    assert kwargs["torch_dtype"] == "float32"
    assert (kwargs["fp16"], kwargs["bf16"]) == (False, False)
    assert kwargs["report_to"] == []
    assert cfg.env == {"IMAGE_MAX_TOKEN_NUM": "64"}
    assert cfg.origin("model.torch_dtype").file == CPU_YAML


@pytest.mark.parametrize(("name", "tuner_type", "freeze_llm", "epochs"), [
    ("stage1.yaml", "full", True, 1),
    ("stage2.yaml", "lora", False, 2),
])
def test_demo_configs_resolve(name, tuner_type, freeze_llm, epochs):
    cfg = load_project_config(CONFIGS / "demo" / name, check_paths=False)
    kwargs = to_sft_kwargs(cfg)
    repo = CONFIGS.parent
    stage = name.removesuffix(".yaml")
    assert kwargs["tuner_type"] == tuner_type
    assert kwargs["freeze_llm"] is freeze_llm
    assert kwargs["freeze_vit"] is True
    assert kwargs["num_train_epochs"] == epochs
    assert kwargs["learning_rate"] == 1.0e-3
    assert kwargs["use_cpu"] is True
    assert kwargs["output_dir"] == str(repo / "output" / "demo" / stage)
    assert kwargs["dataset"] == [str(repo / "output" / "demo-assets" / "data" / "train.jsonl")]
    assert Path(kwargs["model"]).is_absolute()
    assert re.fullmatch(re.escape(str(repo / "output")) + r"/demo(-assets)?/.*", kwargs["model"])


def test_liger_kernel_is_refused_without_its_package_and_on_cpu(tree, monkeypatch):
    import importlib.machinery
    import types

    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # as where the package is not installed
    with pytest.raises(ConfigError, match=r"`liger-kernel` package is not installed: `pip install -e '\.\[gpu\]'`"):
        load_project_config(tree({"training": {"use_liger_kernel": True, "use_cpu": False}}).config)
    installed = types.ModuleType("liger_kernel")
    installed.__spec__ = importlib.machinery.ModuleSpec("liger_kernel", None)
    monkeypatch.setitem(sys.modules, "liger_kernel", installed)  # as on a GPU machine with the package
    assert load_project_config(tree({"training": {"use_liger_kernel": True, "use_cpu": False}}).config)
    with pytest.raises(ConfigError, match="needs a GPU"):
        load_project_config(tree({"training": {"use_liger_kernel": True}}).config)  # the tree is on CPU


def test_a_model_directory_of_another_family_is_refused_before_it_loads(tree):
    t = tree()
    (t.model / "config.json").write_text(json.dumps({"model_type": "qwen3_vl_moe"}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config)
    assert (f"`model.model_type` = 'qwen3_vl', but {t.model / 'config.json'} says model_type 'qwen3_vl_moe': set "
            f"`model.model_type: qwen3_vl_moe`") in str(err.value)
    (t.model / "config.json").write_text(json.dumps({"model_type": "llava"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="point `model.model` at a model of that family"):
        load_project_config(t.config)
    (t.model / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}), encoding="utf-8")
    assert load_project_config(t.config).swift["model_type"] == "qwen3_vl"


@pytest.mark.parametrize(("model_type", "message"), [
    ("qwen2_5_vl", "`model.model_type` = 'qwen2_5_vl' is refused: Qwen2.5-VL writes boxes in pixels of the image "
                   "as its processor resized it"),
    ("llava", "`model.model_type` = 'llava' is not a family this project trains; valid: qwen3_vl, qwen3_vl_moe, "
              "qwen3_5, qwen3_5_moe"),
])
def test_a_family_the_project_does_not_train_is_refused(tree, model_type, message):
    t = tree({"model": {"model_type": model_type}})
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config)
    assert message in str(err.value)


def test_a_template_of_another_family_is_refused(tree):
    t = tree({"model": {"model_type": "qwen3_5"}})
    (t.model / "config.json").write_text(json.dumps({"model_type": "qwen3_5"}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config)  # base.yaml's template is qwen3_vl
    assert "`template.template` = 'qwen3_vl' does not fit `model.model_type` = 'qwen3_5': set " \
           "`template.template: qwen3_5`" in str(err.value)
    t = tree({"model": {"model_type": "qwen3_5"}, "template": {"template": "qwen3_5"}})
    (t.model / "config.json").write_text(json.dumps({"model_type": "qwen3_5"}), encoding="utf-8")
    assert load_project_config(t.config).swift["template"] == "qwen3_5"
