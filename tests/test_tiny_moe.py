"""The tiny Qwen3-VL MoE (`python -m src.tiny_model --arch qwen3_vl_moe`): it loads in transformers, and the
stage-2 LoRA recipe trains it through the real ms-swift pipeline on CPU. What ms-swift 4.6's `all-linear`
resolves to on it is pinned here: the attention projections only. transformers 5 keeps each layer's experts
as fused 3-D parameters (`experts.gate_up_proj`, `experts.down_proj`), not `nn.Linear`, so neither they nor
the router (`mlp.gate`) get LoRA; the aligner is trained in full, as on the dense model. (tests/test_recipes.py
trains every recipe on it, and its stage-2 adapter answers through `src.infer` and is scored by `src.eval`.)"""

from __future__ import annotations

import json
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


def test_the_family_table_agrees_with_ms_swift_and_names_real_parameters(moe_dir, tmp_path):
    """Each family's aligner is what ms-swift's own architecture table says; on the tiny dense and MoE models
    every aligner prefix names parameters, and everything else under model.visual is the vision tower."""
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


@pytest.mark.parametrize(("arch", "size", "total", "active_language"), [
    ("qwen3_vl_moe", "30b-a3b", 31.07e9, 3.3e9),   # Qwen3-VL-30B-A3B: 8 of 128 experts per token
    ("qwen3_5", "9b", 9.41e9, 8.95e9),             # Qwen3.5-9B: 8.95 B language model + 0.45 B vision tower
    ("qwen3_5_moe", "35b-a3b", 35.11e9, 3.45e9),   # Qwen3.5-35B-A3B: 8 of 256 experts per token
])
def test_the_published_sizes_have_the_published_parameter_counts(arch, size, total, active_language):
    """`--size` (for the GPU check) gives the released models' dimensions: their parameter counts, and those
    active per token in the language model; built on the meta device, no memory spent."""
    from src.tiny_model.model import ARCHS

    with torch.device("meta"):
        model = ARCHS[arch].model_class(tiny_config(size, arch))
    params = dict(model.named_parameters())
    count = sum(p.numel() for p in params.values())
    experts = sum(p.numel() for name, p in params.items() if ".experts." in name)
    language = sum(p.numel() for name, p in params.items() if not name.startswith("model.visual."))
    routed = model.config.text_config.num_experts_per_tok / model.config.text_config.num_experts if experts else 1
    assert count == pytest.approx(total, rel=0.005)
    assert language - experts + experts * routed == pytest.approx(active_language, rel=0.05)
    cut = tiny_config(size, arch, layers=8).text_config
    assert cut.num_hidden_layers == 8 and cut.hidden_size == model.config.text_config.hidden_size
