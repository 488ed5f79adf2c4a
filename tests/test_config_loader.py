"""The `extends` chain: merge order and depth, relative paths, diamonds, cycles, YAML errors, origins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from src.config import ConfigError, load_project_config
from src.config.loader import Origin, load_merged_config
from src.config.report import format_resolved
from tests.config_helpers import CPU_YAML, write_config_tree, write_yaml


def load(path: Path, base: Path | None = None):
    return load_merged_config(path, base)


# ---------------------------------------------------------------------------- extends chains


def test_single_extends_child_overrides_parent(tmp_path):
    parent = write_yaml(tmp_path / "parent.yaml", {"training": {"seed": 1, "logging_steps": 5}})
    child = write_yaml(tmp_path / "child.yaml", {"extends": "parent.yaml", "training": {"seed": 2}})
    merged = load(child)
    assert merged.values == {"training": {"seed": 2, "logging_steps": 5}}
    assert merged.files == [parent.resolve(), child.resolve()]
    assert "extends" not in merged.values


def test_extends_list_merges_in_order_then_the_file_itself(tmp_path):
    write_yaml(tmp_path / "b1.yaml", {"training": {"seed": 1, "logging_steps": 1}})
    write_yaml(tmp_path / "b2.yaml", {"training": {"seed": 2, "learning_rate": 0.5}})
    child = write_yaml(tmp_path / "child.yaml", {"extends": ["b1.yaml", "b2.yaml"], "training": {"learning_rate": 0.1}})
    merged = load(child)
    assert merged.values["training"] == {"seed": 2, "logging_steps": 1, "learning_rate": 0.1}
    assert [f.name for f in merged.files] == ["b1.yaml", "b2.yaml", "child.yaml"]


def test_chain_of_depth_three_in_nested_directories(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"training": {"seed": 1, "logging_steps": 1, "learning_rate": 1.0}})
    write_yaml(tmp_path / "sub" / "b.yaml", {"extends": "../a.yaml", "training": {"logging_steps": 2}})
    c = write_yaml(tmp_path / "sub" / "deeper" / "c.yaml", {"extends": "../b.yaml", "training": {"seed": 3}})
    merged = load(c)
    assert merged.values["training"] == {"seed": 3, "logging_steps": 2, "learning_rate": 1.0}
    assert merged.files == [(tmp_path / "a.yaml").resolve(), (tmp_path / "sub/b.yaml").resolve(), c.resolve()]


def test_extends_is_relative_to_the_naming_file_not_the_cwd(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    write_yaml(proj / "configs" / "parent.yaml", {"model": {"model": "models/m"}, "training": {"seed": 9}})
    write_yaml(proj / "runs" / "exp" / "child.yaml", {"extends": "../../configs/parent.yaml"})
    # A decoy where the same relative path leads from the cwd: a cwd-relative lookup would merge it.
    write_yaml(tmp_path / "configs" / "parent.yaml", {"training": {"seed": 1}})
    cwd = tmp_path / "w1" / "w2"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    merged = load(Path("../../proj/runs/exp/child.yaml"))
    assert merged.values["training"]["seed"] == 9
    assert merged.values["model"]["model"] == str((proj / "configs" / "models" / "m").resolve())
    assert merged.files[0] == (proj / "configs" / "parent.yaml").resolve()


def test_mappings_merge_deeply_lists_and_scalars_replace(tmp_path):
    write_yaml(tmp_path / "parent.yaml", {
        "tuner": {"target_modules": ["q_proj", "v_proj"], "lora_rank": 8},
        "training": {"report_to": ["tensorboard", "wandb"],
                     "lr_scheduler_kwargs": {"a": 1, "nested": {"p": 1, "q": 2}}},
    })
    child = write_yaml(tmp_path / "child.yaml", {
        "extends": "parent.yaml",
        "tuner": {"target_modules": ["all-linear"]},
        "training": {"report_to": [], "lr_scheduler_kwargs": {"nested": {"q": 3}}},
    })
    merged = load(child)
    assert merged.values["tuner"] == {"target_modules": ["all-linear"], "lora_rank": 8}
    assert merged.values["training"]["report_to"] == []
    assert merged.values["training"]["lr_scheduler_kwargs"] == {"a": 1, "nested": {"p": 1, "q": 3}}


def test_a_mapping_replaced_by_a_scalar_drops_the_old_subtree_and_its_origins(tmp_path):
    write_yaml(tmp_path / "parent.yaml", {"training": {"lr_scheduler_kwargs": {"a": 1, "b": 2}}})
    child = write_yaml(tmp_path / "child.yaml", "extends: parent.yaml\ntraining:\n  lr_scheduler_kwargs: null\n")
    merged = load(child)
    assert merged.values["training"]["lr_scheduler_kwargs"] is None
    assert not [k for k in merged.origins if k.startswith("training.lr_scheduler_kwargs.")]
    assert merged.origins["training.lr_scheduler_kwargs"] == Origin(child.resolve(), 3)


def test_base_config_is_merged_under_the_whole_chain(tmp_path):
    base_cfg = write_yaml(tmp_path / "shared" / "site.yaml", {
        "training": {"seed": 7, "warmup_ratio": 0.1, "logging_dir": "logs"},
    })
    write_yaml(tmp_path / "parent.yaml", {"training": {"seed": 1}})
    child = write_yaml(tmp_path / "child.yaml", {"extends": "parent.yaml", "training": {"logging_steps": 3}})
    merged = load(child, base_cfg)
    assert merged.values["training"]["seed"] == 1  # the chain's value wins over the base
    assert merged.values["training"]["warmup_ratio"] == 0.1  # only the base sets it
    assert merged.values["training"]["logging_dir"] == str((tmp_path / "shared" / "logs").resolve())
    assert merged.files[0] == base_cfg.resolve()
    assert merged.files[-1] == child.resolve()
    assert merged.origins["training.warmup_ratio"].file == base_cfg.resolve()


def test_diamond_base_is_merged_once_at_its_first_place(tmp_path):
    d = write_yaml(tmp_path / "d.yaml", {"training": {"seed": 1, "logging_steps": 1}})
    write_yaml(tmp_path / "b.yaml", {"extends": "d.yaml", "training": {"seed": 2}})
    write_yaml(tmp_path / "c.yaml", {"extends": "d.yaml", "training": {"learning_rate": 0.3}})
    a = write_yaml(tmp_path / "a.yaml", {"extends": ["b.yaml", "c.yaml"]})
    merged = load(a)
    # Merging d again at c's place would put seed back to 1.
    assert merged.values["training"] == {"seed": 2, "logging_steps": 1, "learning_rate": 0.3}
    assert [f.name for f in merged.files] == ["d.yaml", "b.yaml", "c.yaml", "a.yaml"]
    assert merged.files.count(d.resolve()) == 1
    assert merged.origins["training.seed"].file.name == "b.yaml"


def test_shipped_demo_config_relies_on_the_diamond_rule():
    # demo/stage1 extends [stage_1_full_aligner_only, cpu], both extend base.yaml.
    merged = load(CPU_YAML.parent / "demo" / "stage1.yaml")
    assert merged.values["tuner"]["train_type"] == "full"
    assert merged.values["tuner"]["freeze_llm"] is True
    assert merged.values["model"]["torch_dtype"] == "float32"
    assert [f.name for f in merged.files] == ["base.yaml", "stage_1_full_aligner_only.yaml", "cpu.yaml",
                                              "stage1.yaml"]


# ---------------------------------------------------------------------------- errors in the chain


def test_cycle_error_prints_the_chain(tmp_path):
    a = write_yaml(tmp_path / "a.yaml", {"extends": "b.yaml"})
    b = write_yaml(tmp_path / "b.yaml", {"extends": "sub/c.yaml"})
    c = write_yaml(tmp_path / "sub" / "c.yaml", {"extends": "../a.yaml"})
    with pytest.raises(ConfigError) as err:
        load(a)
    chain = " -> ".join(str(p.resolve()) for p in (a, b, c, a))
    assert str(err.value) == f"extends cycle: {chain}"


def test_a_file_extending_itself_is_a_cycle(tmp_path):
    a = write_yaml(tmp_path / "a.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match=re.escape(f"extends cycle: {a.resolve()} -> {a.resolve()}")):
        load(a)


def test_missing_extends_file_names_the_declaring_file_line_and_resolved_path(tmp_path):
    write_yaml(tmp_path / "ok.yaml", {})
    child = write_yaml(tmp_path / "cfg" / "child.yaml", "# comment\nextends: [../ok.yaml, ../nope.yaml]\n")
    with pytest.raises(ConfigError) as err:
        load(child)
    text = str(err.value)
    assert text.startswith(f"{child.resolve()}:2: extends: file not found: ../nope.yaml")
    assert str((tmp_path / "nope.yaml").resolve()) in text
    assert f"relative to {child.resolve().parent}" in text


def test_missing_extends_deep_in_the_chain_names_the_middle_file(tmp_path):
    mid = write_yaml(tmp_path / "mid.yaml", {"extends": "gone.yaml"})
    top = write_yaml(tmp_path / "top.yaml", {"extends": "mid.yaml"})
    with pytest.raises(ConfigError, match=re.escape(f"{mid.resolve()}:1: extends: file not found: gone.yaml")):
        load(top)


@pytest.mark.parametrize("value", ["5", "{a: b.yaml}", "[a.yaml, 3]"])
def test_extends_must_be_a_path_or_a_list_of_paths(tmp_path, value):
    cfg = write_yaml(tmp_path / "c.yaml", f"training: {{}}\nextends: {value}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{cfg.resolve()}:2: `extends` must be a path or a list")):
        load(cfg)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{(tmp_path / 'x.yaml').resolve()}: config file not found")):
        load(tmp_path / "x.yaml")


@pytest.mark.parametrize(("text", "line", "column", "problem"), [
    ("model:\n  model: a: b\n", 2, 11, "mapping values are not allowed"),
    ("training:\n  seed: 1\ntuner: [1, 2\nx: 1\n", 4, 2, "expected ',' or ']'"),
    ("training:\n  seed: 1\n\tlogging_steps: 2\n", 3, 1, "tab character"),
    ('prompts:\n  system: "unterminated\n', 3, 1, "found unexpected end of stream"),
])
def test_invalid_yaml_reports_file_line_and_column(tmp_path, text, line, column, problem):
    bad = write_yaml(tmp_path / "parent.yaml", text)
    child = write_yaml(tmp_path / "child.yaml", {"extends": "parent.yaml"})
    with pytest.raises(ConfigError) as err:
        load(child)  # the syntax error is in the parent: the parent is named
    assert str(err.value).startswith(f"{bad.resolve()}:{line}:{column}: invalid YAML: ")
    assert problem in str(err.value)


def test_top_level_must_be_a_mapping(tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", "- model\n- tuner\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:1: the top level must be a mapping .*got a list"):
        load(cfg)


def test_an_empty_file_is_an_empty_mapping(tmp_path):
    write_yaml(tmp_path / "empty.yaml", "# nothing here\n")
    child = write_yaml(tmp_path / "child.yaml", {"extends": "empty.yaml", "training": {"seed": 1}})
    assert load(child).values == {"training": {"seed": 1}}


# ---------------------------------------------------------------------------- origins


def test_every_leaf_records_its_file_and_line(tmp_path):
    parent = write_yaml(tmp_path / "parent.yaml", """\
        # parent
        training:
          seed: 1
          logging_steps: 5
        tuner:
          target_modules: [all-linear]
        """)
    child = write_yaml(tmp_path / "child.yaml", """\
        extends: parent.yaml

        training:

          seed: 2
        """)
    merged = load(child)
    parent, child = parent.resolve(), child.resolve()
    assert merged.origins["training.seed"] == Origin(child, 5)
    assert merged.origins["training.logging_steps"] == Origin(parent, 4)
    assert merged.origins["tuner.target_modules"] == Origin(parent, 6)
    assert str(merged.origins["training.seed"]) == f"{child}:5"
    shown = {line.split(" = ")[0]: line.split("# ")[-1] for line in format_resolved(merged).splitlines()}
    assert shown == {"training.seed": f"{child}:5", "training.logging_steps": f"{parent}:4",
                     "tuner.target_modules": f"{parent}:6"}


def test_origins_follow_the_aliases(tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", """\
        data:
          emit_norm: none
        tuner:
          lora_rank: 4
          tuner_type: full
        """)
    merged = load(cfg)
    assert merged.values["custom"] == {"emit_norm": "none"}
    assert "data" not in merged.values
    assert merged.values["tuner"] == {"lora_rank": 4, "train_type": "full"}
    assert merged.origins["custom.emit_norm"] == Origin(cfg.resolve(), 2)
    assert merged.origins["tuner.train_type"] == Origin(cfg.resolve(), 5)


def test_data_alias_in_a_child_overrides_custom_in_a_parent(tmp_path):
    write_yaml(tmp_path / "parent.yaml", {"custom": {"emit_norm": "norm1000", "augment_prob": 0.5}})
    child = write_yaml(tmp_path / "child.yaml", {"extends": "parent.yaml", "data": {"emit_norm": "norm100"}})
    merged = load(child)
    assert merged.values["custom"] == {"emit_norm": "norm100", "augment_prob": 0.5}
    assert merged.origins["custom.emit_norm"].file == child.resolve()


def test_resolved_config_lines_show_value_and_origin(tmp_path):
    tree = write_config_tree(tmp_path, "training:\n  seed: 3\n")
    cfg = load_project_config(tree.config)
    lines = format_resolved(cfg.merged).splitlines()
    assert any(re.fullmatch(rf"training\.seed = 3 +# {re.escape(str(tree.config))}:3", ln) for ln in lines)
    assert any(re.fullmatch(rf"model\.attn_impl = \"sdpa\" +# {re.escape(str(CPU_YAML))}:\d+", ln) for ln in lines)
    model_line = next(ln for ln in lines if ln.startswith("model.model = "))
    assert f'"{tree.model}"' in model_line and f"# {tree.base}:" in model_line


# ---------------------------------------------------------------------------- path keys


@pytest.mark.parametrize(("section", "key", "value"), [
    ("model", "model", "../models/qwen"),
    ("custom", "train_jsonl", "data/train.jsonl"),
    ("custom", "val_jsonl", "./data/../data/val.jsonl"),
    ("training", "output_dir", "../../out/run1"),
    ("training", "logging_dir", "logs"),
    ("tuner", "resume_from_checkpoint", "out/checkpoint-5"),
    ("deepspeed", "config", "ds/zero2.json"),
])
def test_path_keys_resolve_against_the_declaring_file_and_become_absolute(tmp_path, monkeypatch, section, key, value):
    write_yaml(tmp_path / "a" / "b" / "parent.yaml", {section: {key: value}})
    child = write_yaml(tmp_path / "child" / "child.yaml", {"extends": "../a/b/parent.yaml", "training": {"seed": 1}})
    monkeypatch.chdir(tmp_path / "child")
    resolved = load(child).values[section][key]
    assert Path(resolved).is_absolute()
    assert resolved == str((tmp_path / "a" / "b" / value).resolve())


def test_a_path_overridden_by_a_child_resolves_against_the_child(tmp_path):
    write_yaml(tmp_path / "configs" / "parent.yaml", {"model": {"model": "m1"}})
    child = write_yaml(tmp_path / "runs" / "child.yaml", {"extends": "../configs/parent.yaml",
                                                           "model": {"model": "m2"}})
    assert load(child).values["model"]["model"] == str((tmp_path / "runs" / "m2").resolve())


def test_absolute_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = write_yaml(tmp_path / "c.yaml", {"model": {"model": "/opt/models/m"},
                                           "custom": {"train_jsonl": "~/data/train.jsonl"}})
    values = load(cfg).values
    assert values["model"]["model"] == "/opt/models/m"
    assert values["custom"]["train_jsonl"] == str((tmp_path / "home" / "data" / "train.jsonl").resolve())


@pytest.mark.parametrize(("value", "is_path"), [
    ("zero2", False),
    ("zero3_offload", False),
    ("zero2.json", True),
    ("./zero2", True),
    ("deepspeed/zero3.json", True),
])
def test_deepspeed_preset_names_are_not_paths(tmp_path, value, is_path):
    cfg = write_yaml(tmp_path / "c.yaml", {"deepspeed": {"enabled": True, "config": value}})
    resolved = load(cfg).values["deepspeed"]["config"]
    assert resolved == (str((tmp_path / value).resolve()) if is_path else value)


def test_resume_auto_and_null_paths_are_kept_and_non_path_keys_untouched(tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", {"tuner": {"resume_from_checkpoint": "auto"},
                                           "training": {"output_dir": None, "run_name": "./looks/like/a/path"},
                                           "template": {"template": "qwen3_vl"}})
    values = load(cfg).values
    assert values["tuner"]["resume_from_checkpoint"] == "auto"
    assert values["training"]["output_dir"] is None
    assert values["training"]["run_name"] == "./looks/like/a/path"


def test_adapter_paths_resolve_against_the_declaring_file(tmp_path):
    cfg = write_yaml(tmp_path / "cfg" / "c.yaml", {"tuner": {"adapters": ["ckpt/adapter"]}})
    assert load(cfg).values["tuner"]["adapters"] == [str((tmp_path / "cfg" / "ckpt" / "adapter").resolve())]
