"""The LoRA checkpoint guard on real safetensors files."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from src.training.checkpoint_guard import check_adapter_checkpoint, unexpected_adapter_keys

SAVED = ["merger", "deepstack_merger_list.0"]


def test_lora_and_modules_to_save_are_allowed_base_weights_are_not():
    keys = [
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.visual.merger.linear_fc1.weight",
        "base_model.model.model.visual.deepstack_merger_list.0.norm.bias",
        "base_model.model.model.visual.deepstack_merger_list.1.norm.bias",
        "base_model.model.model.language_model.layers.0.mlp.up_proj.weight",
    ]
    assert unexpected_adapter_keys(keys, SAVED) == keys[3:]
    assert unexpected_adapter_keys(keys[:1], None) == []


def test_checkpoint_with_a_full_model_or_base_weights_fails(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    save_file({"a.q_proj.lora_A.weight": torch.zeros(2, 2), "model.visual.merger.norm.weight": torch.zeros(2)},
              str(good / "adapter_model.safetensors"))
    assert check_adapter_checkpoint(good, SAVED) == []

    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({"model.language_model.embed_tokens.weight": torch.zeros(2, 2)}, str(bad / "adapter_model.safetensors"))
    (bad / "model.safetensors").write_bytes(b"")
    problems = check_adapter_checkpoint(bad, SAVED)
    assert any("must not hold the full model" in p for p in problems)
    assert any("embed_tokens" in p for p in problems)
