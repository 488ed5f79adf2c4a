"""The tiny Qwen3-VL MoE (`python -m src.tiny_model --arch qwen3_vl_moe`): it loads in transformers, and the
stage-2 LoRA recipe trains it through the real ms-swift pipeline on CPU. What ms-swift 4.6's `all-linear`
resolves to on it is pinned here: the attention projections only. transformers 5 keeps each layer's experts
as fused 3-D parameters (`experts.gate_up_proj`, `experts.down_proj`), not `nn.Linear`, so neither they nor
the router (`mlp.gate`) get LoRA; the aligner is trained in full, as on the dense model. The health check
passes on it, and its adapter answers through `src.infer` and is scored by `src.eval`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from src.tiny_model import build_tiny_model, tiny_config

REPO = Path(__file__).resolve().parents[1]
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("moe") / "model", arch="qwen3_vl_moe")


def test_the_moe_builds_routes_and_loads(moe_dir):
    from transformers import AutoModelForImageTextToText

    assert json.loads((moe_dir / "config.json").read_text())["model_type"] == "qwen3_vl_moe"
    assert json.loads((moe_dir / "tiny_model.json").read_text())["arch"] == "qwen3_vl_moe"
    model = AutoModelForImageTextToText.from_pretrained(moe_dir)
    names = [name for name, _ in model.named_parameters()]
    assert any(name.endswith("layers.0.mlp.experts.gate_up_proj") for name in names)
    assert any(name.endswith("layers.1.mlp.gate.weight") for name in names)  # every layer routed
    text = model.config.text_config
    assert (text.num_experts, text.num_experts_per_tok, text.vocab_size) == (4, 2, 151936)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[872, 198, 9707]])).logits
    assert logits.shape == (1, 3, 151936) and torch.isfinite(logits).all()
    with pytest.raises(KeyError, match="unknown size .2b. for qwen3_vl_moe; valid: tiny, 30b-a3b"):
        tiny_config("2b", "qwen3_vl_moe")


@pytest.mark.slow
def test_the_stage_2_recipe_trains_the_moe_with_lora_on_attention_and_the_aligner(moe_dir, tmp_path):
    from src.datasets.synth import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n=6, val_fraction=0.0)
    config = tmp_path / "moe.yaml"
    config.write_text(json.dumps({
        "extends": [str(REPO / "configs" / "stage_2_llm_lora.yaml"), str(REPO / "configs" / "cpu.yaml")],
        "model": {"model": str(moe_dir), "model_type": "qwen3_vl_moe"},
        "custom": {"train_jsonl": str(tmp_path / "data" / "train.jsonl"), "health_check_samples": 1},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "eval_strategy": "no",
                     "save_strategy": "steps", "save_steps": 2, "logging_steps": 1}}))
    proc = subprocess.run([sys.executable, "-m", "src.sft", "--config", str(config)], cwd=REPO, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoint-2"
    with safe_open(str(checkpoint / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    lora = [k for k in keys if ".lora_" in k]
    full = [k for k in keys if ".lora_" not in k]
    assert lora and all(".language_model." in k and any(f".{p}." in k for p in ATTENTION) for k in lora), lora
    assert not any(".mlp." in k for k in keys)  # neither the experts nor the router
    assert full and all(".visual.merger." in k or ".visual.deepstack_merger_list." in k for k in full), full
    assert "health check: the first 1 samples encode as built" in proc.stdout

    # The adapter answers through src.infer (base model from its args.json) and src.eval scores it.
    predictions, metrics = tmp_path / "pred.jsonl", tmp_path / "metrics.json"
    for argv in (["-m", "src.infer", "--config", str(config), "--checkpoint", str(checkpoint), "--jsonl",
                  str(tmp_path / "data" / "train.jsonl"), "--limit", "2", "--max_new_tokens", "16", "--out",
                  str(predictions)],
                 ["-m", "src.eval", "--pred", str(predictions), "--gt", str(tmp_path / "data" / "train.jsonl"),
                  "--out", str(metrics)]):
        step = subprocess.run([sys.executable, *argv], cwd=REPO, text=True, capture_output=True, timeout=600)
        assert step.returncode == 0, step.stdout[-3000:] + step.stderr[-3000:]
    assert len(predictions.read_text().splitlines()) == 2
    assert json.loads(metrics.read_text())["n_pred_rows"] == 2


def test_the_family_table_agrees_with_ms_swift_and_names_real_parameters(moe_dir, tmp_path):
    """Each family's aligner is what ms-swift's own architecture table says; on the tiny dense and MoE models
    every aligner prefix names parameters, and everything else under model.visual is the vision tower."""
    from safetensors import safe_open
    from swift.model.register import MODEL_MAPPING

    from src.config.families import FAMILIES

    for model_type, family in FAMILIES.items():
        aligner = MODEL_MAPPING[model_type].model_arch.aligner
        assert family.aligner == tuple([aligner] if isinstance(aligner, str) else aligner), model_type
        assert family.template == MODEL_MAPPING[model_type].model_groups[0].template, model_type
    dense_dir = build_tiny_model(tmp_path / "dense")
    for model_dir, model_type in ((dense_dir, "qwen3_vl"), (moe_dir, "qwen3_vl_moe")):
        with safe_open(str(model_dir / "model.safetensors"), "pt") as fh:
            names = list(fh.keys())
        for prefix in FAMILIES[model_type].aligner:
            assert any(name.startswith(prefix + ".") for name in names), (model_type, prefix)


def test_the_30b_a3b_size_has_the_published_parameter_count():
    """`--size 30b-a3b` (for the GPU check) is Qwen3-VL-30B-A3B: 31.1 B parameters, about 3 B active per token
    in the language model (8 of 128 experts); built on the meta device, no memory spent."""
    from src.tiny_model.model import ARCHS

    config = tiny_config("30b-a3b", "qwen3_vl_moe")
    with torch.device("meta"):
        model = ARCHS["qwen3_vl_moe"].model_class(config)
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    language = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("model.visual."))
    assert 31.0e9 < total < 31.2e9
    assert 3.0e9 < language - experts + experts * 8 / 128 < 3.5e9
    cut = tiny_config("30b-a3b", "qwen3_vl_moe", layers=12).text_config
    assert (cut.num_hidden_layers, cut.num_experts, cut.hidden_size) == (12, 128, 2048)
