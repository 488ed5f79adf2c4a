"""The FLOPs formula (src/training/flops.py) checked by hand on the tiny Qwen3-VL: its parameter counts against
the built model's tensors, and a step's FLOPs written out term by term."""

from __future__ import annotations

import pytest

from src.training.flops import (
    ModelDims,
    Regime,
    UnsupportedModel,
    dims_from_config,
    flops_per_token,
    matmul_params,
    part_of,
    step_flops,
)

# The tiny model (src/tiny_model/model.py): text hidden 64, 2 layers, 4 heads / 2 kv heads of 16, MLP 128,
# Qwen's 151,936-token vocabulary, tied; vision hidden 32, depth 2, MLP 64, patch 16, temporal 2, merge 2,
# out 64, one deepstack merger.
LLM = 2 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128)  # q, k, v, o, gate + up + down: 73,728
HEAD = 64 * 151936  # 9,723,904
VISION = 3 * 2 * 16 * 16 * 32 + 2 * (3 * 32 * 32 + 32 * 32 + 32 * 64 + 64 * 32)  # patch embed + 2 blocks: 65,536
ALIGNER = 2 * (128 * 128 + 128 * 64)  # merger + one deepstack merger over 2x2 patches (4 * 32): 49,152


def _built(arch: str):
    """The tiny model's config and the model built from it on the meta device (shapes only: fast)."""
    import torch

    from src.tiny_model.model import ARCHS, tiny_config

    config = tiny_config(arch=arch)
    with torch.device("meta"):
        return config, ARCHS[arch].model_class(config)


@pytest.fixture(scope="module")
def tiny():
    return _built("qwen3_vl")


def test_parameter_counts_are_the_tiny_models_own(tiny):
    config, model = tiny
    dims = dims_from_config(config.to_dict())
    assert matmul_params(dims) == {"llm": LLM, "lm_head": HEAD, "vision": VISION, "aligner": ALIGNER}
    built: dict[str, int] = {}
    for name, param in model.named_parameters():  # the tied LM head appears once, as embed_tokens
        part = part_of(name, tied=dims.text.tied)
        if part is not None and param.dim() >= 2:
            built[part] = built.get(part, 0) + param.numel()
    assert built == matmul_params(dims)


def test_moe_counts_the_routed_experts_and_the_router():
    config, model = _built("qwen3_vl_moe")  # 4 experts of 32, 2 per token, every layer sparse
    dims = dims_from_config(config.to_dict())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    router = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".mlp.gate.weight"))
    attention = sum(p.numel() for n, p in model.named_parameters() if ".self_attn." in n and p.dim() == 2)
    assert experts == 2 * 4 * 3 * 64 * 32 and router == 2 * 4 * 64
    assert matmul_params(dims)["llm"] == attention + experts * 2 // 4 + router


def test_stage_2_lora_step_by_hand(tiny):
    config, _ = tiny
    dims = dims_from_config(config.to_dict())
    adapters = 2 * 8 * (128 + 96 + 96 + 128 + 192 + 192 + 192)  # rank 8 on q, k, v, o, gate, up, down: 16,384
    regime = Regime(adapters={"llm": adapters}, trained={"llm": adapters, "aligner": ALIGNER},
                    recompute=frozenset({"llm"}))
    # llm: forward, input gradients, recomputation (3 passes) of base + adapters, weight gradients of adapters;
    # LM head: forward and input gradients, frozen.
    per_token = 2 * (LLM + adapters) * 3 + 2 * adapters + 2 * HEAD * 2
    assert flops_per_token(dims, regime) == per_token == 39_469_056

    seq_lens, patches, head = [10, 6], [16], 5  # one 4x4-patch image: 4 image tokens
    llm = (2 * (LLM + adapters) * 3 + 2 * adapters) * 16
    head_flops = 2 * HEAD * 2 * head
    attention = (1 + 2 + 1) * 2 * 4 * (4 * 16) * (10 * 10 + 6 * 6)  # passes * layers * 4 * heads*head_dim * sum L^2
    vision = 2 * VISION * 16 + 1 * 2 * 4 * 32 * 16 * 16  # frozen, nothing below it trains: forward only
    aligner = (2 * ALIGNER * 2 + 2 * ALIGNER) * 4  # trained fully: forward, input and weight gradients
    assert step_flops(dims, regime, seq_lens, patches, head) == llm + head_flops + attention + vision + aligner
    # Without head positions the head runs on every token.
    assert step_flops(dims, regime, seq_lens, patches) - step_flops(dims, regime, seq_lens, patches, head) == \
        2 * HEAD * 2 * (16 - head)


def test_frozen_model_costs_a_forward_and_full_training_three():
    dims = ModelDims(dims_from_config({"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
                                       "intermediate_size": 16, "vocab_size": 10}).text, None)
    params = matmul_params(dims)
    assert params == {"llm": 8 * 8 * 4 + 3 * 8 * 16, "lm_head": 80, "vision": 0, "aligner": 0}
    frozen = Regime()
    assert flops_per_token(dims, frozen) == 2 * (params["llm"] + 80)
    full = Regime(trained={"llm": params["llm"], "lm_head": 80})
    assert flops_per_token(dims, full) == 6 * (params["llm"] + 80)
    # A single sequence of 3: attention 4 * L * heads*head_dim per token and layer, 3 passes when trained.
    assert step_flops(dims, full, [3]) == 3 * 6 * (params["llm"] + 80) + 3 * 4 * 8 * 9


@pytest.mark.parametrize(("config", "key"), [
    ({"text_config": {"layer_types": ["linear_attention", "full_attention"], "hidden_size": 8}}, "layer_types"),
    ({"text_config": {"num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 4}}, "hidden_size"),
])
def test_uncounted_models_are_refused_naming_the_key(config, key):
    with pytest.raises(UnsupportedModel, match=f"text_config.{key}"):
        dims_from_config(config)


def test_parts_by_parameter_name():
    assert part_of("base_model.model.model.visual.merger.linear_fc1.lora_A.default.weight", tied=True) == "aligner"
    assert part_of("model.visual.deepstack_merger_list.0.linear_fc2.weight", tied=True) == "aligner"
    assert part_of("model.visual.blocks.1.attn.qkv.weight", tied=True) == "vision"
    assert part_of("model.visual.pos_embed.weight", tied=True) is None
    assert part_of("model.language_model.layers.0.mlp.up_proj.lora_B.default.weight", tied=True) == "llm"
    assert part_of("model.language_model.embed_tokens.weight", tied=True) == "lm_head"
    assert part_of("model.language_model.embed_tokens.weight", tied=False) is None
    assert part_of("lm_head.weight", tied=False) == "lm_head"
