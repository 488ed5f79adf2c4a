"""Choosing the ms-swift inference engine and the arguments vLLM's would get (vLLM cannot run here: the decision
and the arguments are what is tested; the arguments against the installed ms-swift's `VllmEngine` signature)."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from src.config import ConfigError
from src.datasets.run_config import load_config_for_run
from src.inference.engine import choose_engine, settle_auto, vllm_kwargs_for
from tests.config_helpers import make_fake_model


@pytest.mark.parametrize(("requested", "vllm", "cuda", "expected"), [
    ("auto", True, True, "vllm"),
    ("auto", True, False, "transformers"),
    ("auto", False, True, "transformers"),
    ("transformers", True, True, "transformers"),
    ("vllm", True, True, "vllm"),
])
def test_engine_choice(requested, vllm, cuda, expected):
    assert choose_engine(requested, vllm, cuda) == expected


@pytest.mark.parametrize(("vllm", "cuda", "reason"), [(False, True, "vllm is not installed; pip install vllm"),
                                                      (True, False, "no CUDA GPU is visible")])
def test_vllm_that_cannot_run_is_refused_naming_the_option_and_the_remedy(vllm, cuda, reason):
    with pytest.raises(ValueError, match=reason) as refused:
        choose_engine("vllm", vllm, cuda, option="`eval.backend`:")
    assert str(refused.value).startswith("`eval.backend`: vllm needs")


def _vllm_engine_parameters() -> set[str]:
    """The keyword parameters of the installed ms-swift's `VllmEngine.__init__`, read from its source (importing
    it imports vllm)."""
    source = Path(importlib.util.find_spec("swift").submodule_search_locations[0]) / "infer_engine" / "vllm_engine.py"
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == "VllmEngine":
            init = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
            return {a.arg for a in init.args.args + init.args.kwonlyargs} - {"self"}
    raise AssertionError("no VllmEngine in ms-swift")


@pytest.fixture
def cfg(tree):
    return load_config_for_run(tree({"global_max_length": 4096}).config, check_paths=False)


def _adapter(root: Path, base: Path, **config) -> Path:
    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, **config}))
    (root / "args.json").write_text(json.dumps({"model": str(base)}))
    return root


def test_vllm_arguments_for_a_merged_model(cfg, tmp_path):
    model = make_fake_model(tmp_path / "merged")
    kwargs = vllm_kwargs_for(cfg, model, batch_size=32, max_new_tokens=1024, gpu_memory_utilization=0.5,
                             tensor_parallel_size=2)
    assert set(kwargs) <= _vllm_engine_parameters()
    assert kwargs["model_id_or_path"] == str(model.resolve()) and "adapters" not in kwargs
    assert "enable_lora" not in kwargs
    assert kwargs["max_model_len"] == 4096 + 1024  # the training's length holds every prompt; plus the answer
    assert kwargs["max_num_seqs"] == 32
    assert kwargs["limit_mm_per_prompt"] == {"image": 1, "video": 0}
    assert (kwargs["gpu_memory_utilization"], kwargs["tensor_parallel_size"]) == (0.5, 2)
    assert (kwargs["model_type"], kwargs["template_type"]) == ("qwen3_vl", "qwen3_vl")


@pytest.mark.parametrize(("adapter_config", "rank"), [({"r": 8}, 8), ({"r": 24}, 32),
                                                      ({"r": 16, "rank_pattern": {"q_proj": 100}}, 128)])
def test_vllm_arguments_for_an_adapter_serve_it_as_lora(cfg, tmp_path, adapter_config, rank):
    base = make_fake_model(tmp_path / "base")
    adapter = _adapter(tmp_path / "checkpoint-4", base, **adapter_config)
    kwargs = vllm_kwargs_for(cfg, adapter)
    assert set(kwargs) <= _vllm_engine_parameters()
    assert kwargs["model_id_or_path"] == str(base) and kwargs["adapters"] == [str(adapter.resolve())]
    assert (kwargs["enable_lora"], kwargs["max_loras"], kwargs["max_lora_rank"]) == (True, 1, rank)


def test_an_adapter_vllm_cannot_load_is_refused_with_the_remedy(cfg, tmp_path):
    base = make_fake_model(tmp_path / "base")
    stage2 = _adapter(tmp_path / "stage2", base, modules_to_save=["merger"])
    with pytest.raises(ConfigError, match=r"stage2/adapter_config.json: modules_to_save = \['merger'\].*"
                                          r"swift export --adapters .*stage2 --merge_lora true"):
        vllm_kwargs_for(cfg, stage2)
    huge = _adapter(tmp_path / "huge", base, r=1024)
    with pytest.raises(ConfigError, match="LoRA rank 1024 is above the 512 vLLM accepts"):
        vllm_kwargs_for(cfg, huge)
    with pytest.raises(ConfigError, match="gpu_memory_utilization = 1.5"):
        vllm_kwargs_for(cfg, make_fake_model(tmp_path / "m"), gpu_memory_utilization=1.5)


def test_without_a_length_in_the_config_vllm_takes_the_models_own(tree, tmp_path):
    cfg = load_config_for_run(tree().config, check_paths=False)
    assert vllm_kwargs_for(cfg, make_fake_model(tmp_path / "m"))["max_model_len"] is None


def test_auto_falls_back_to_transformers_where_vllm_cannot_serve_the_checkpoint(cfg, tmp_path):
    base = make_fake_model(tmp_path / "base")
    stage2 = _adapter(tmp_path / "stage2", base, modules_to_save=["merger"])  # the stage-2 recipe's adapter
    engine, note = settle_auto("auto", "vllm", cfg, stage2)
    assert engine == "transformers" and "modules_to_save" in note and "merge_lora" in note
    assert settle_auto("auto", "vllm", cfg, _adapter(tmp_path / "plain", base)) == ("vllm", None)
    assert settle_auto("vllm", "vllm", cfg, stage2) == ("vllm", None)  # asked for by name: refused later, said
    assert settle_auto("auto", "transformers", cfg, stage2) == ("transformers", None)


def test_vllm_is_refused_a_model_that_ships_code_unless_the_config_trusts_it(cfg, tmp_path, monkeypatch):
    from src.config.remote_code import TRUST_ENV

    model = make_fake_model(tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoConfig": "configuration_x.Cfg"}}))
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(ConfigError, match=rf"m/config.json name it in auto_map.*--backend transformers.*{TRUST_ENV}"):
        vllm_kwargs_for(cfg, model)
    assert settle_auto("auto", "vllm", cfg, model)[0] == "transformers"
    monkeypatch.setenv(TRUST_ENV, "1")
    assert vllm_kwargs_for(cfg, model)["model_id_or_path"] == str(model.resolve())
