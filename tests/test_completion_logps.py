"""Completion log-probabilities chunk by chunk (src/training/completion_logps.py): the chunked function against
ms-swift's formula, the tiny Qwen3-VL through ms-swift's own `_get_logps_via_local_forward` against the armed
head (log-probabilities, entropies, gradients), and the decisions and fallbacks."""

from __future__ import annotations

import inspect
import types

import pytest
import torch

from src.training.completion_logps import CompletionLogpsHead, completion_logps, install, local_forward, why_not


def _swift_formula(hidden, weight, bias, targets, temperature):
    """What ms-swift 4.6 does to the logits it keeps: divide in place, then trl's log-softmax and entropy."""
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    logits = torch.nn.functional.linear(hidden, weight, bias)
    logits.div_(temperature)
    return selective_log_softmax(logits, targets), entropy_from_logits(logits)


@pytest.mark.parametrize("rows", [1, 3, 64])
@pytest.mark.parametrize("head_trains", [True, False])
def test_chunked_logps_entropies_and_gradients_equal_full_logits(rows, head_trains):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 8, generator=gen)
    weight, bias = torch.randn(50, 8, generator=gen), torch.randn(50, generator=gen)
    targets = torch.randint(0, 50, (10,), generator=gen)
    upstream = torch.randn(10, generator=gen)  # GRPO's gradient per token is anything: not a plain CE's

    def leaves():
        return [hidden.clone().requires_grad_(), weight.clone().requires_grad_(head_trains),
                bias.clone().requires_grad_(head_trains)]

    mine, theirs = leaves(), leaves()
    logps, entropies = completion_logps(*mine, targets, temperature=0.7, rows=rows, entropy=True)
    ref_logps, ref_entropies = _swift_formula(*theirs, targets, 0.7)
    (logps * upstream).sum().backward()
    (ref_logps * upstream).sum().backward()
    torch.testing.assert_close(logps, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropies, ref_entropies.detach(), atol=1e-5, rtol=1e-5)
    assert not entropies.requires_grad
    for a, b in zip(mine, theirs, strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        quiet, none = completion_logps(*leaves(), targets, temperature=0.7, rows=rows)
    assert none is None and not quiet.requires_grad
    torch.testing.assert_close(quiet, ref_logps.detach(), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny(mp_workspace):
    """The tiny Qwen3-VL (fp32) and a padded batch of two rows, each with its image; the last 6 tokens of each
    row stand for its completion."""
    from PIL import Image
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(mp_workspace / "model")
    image = Image.open(next((mp_workspace / "data" / "images").glob("*.png"))).convert("RGB")
    texts = ["<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>find the boxes<|im_end|>\n"
             "<|im_start|>assistant\n[{\"bbox_2d\": [1, 2, 3, 4]}]",
             "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>boxes<|im_end|>\n"
             "<|im_start|>assistant\n[]"]
    inputs = processor(text=texts, images=[image, image.resize((64, 48))], return_tensors="pt", padding=True)
    model = Qwen3VLForConditionalGeneration.from_pretrained(mp_workspace / "model", dtype=torch.float32)
    return model, dict(inputs)


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow  # the tiny model's build (shared with other slow tests)
@pytest.mark.parametrize("head_trains", [True, False])
def test_the_armed_head_gives_ms_swift_s_logps_entropies_and_gradients_on_the_tiny_model(tiny, head_trains):
    from swift.rlhf_trainers.grpo_trainer import GRPOTrainer

    model, inputs = tiny
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    model.lm_head.weight.requires_grad_(head_trains)  # tied to the embeddings: LoRA leaves both frozen
    keys = inspect.signature(model.forward).parameters.keys()
    swift_self = types.SimpleNamespace(model_kwarg_keys=keys, temperature=0.7,
                                       template=types.SimpleNamespace(padding_free=False))
    keep, input_ids = 6, inputs["input_ids"]
    upstream = torch.randn(input_ids.shape[0], keep, generator=torch.Generator().manual_seed(1))

    model.zero_grad()
    ref_logps, ref_entropies = GRPOTrainer._get_logps_via_local_forward(
        swift_self, model, dict(inputs), keep, input_ids, compute_entropy=True)
    (ref_logps * upstream).sum().backward()
    ref_grads = _grads(model)

    model.zero_grad()
    head = CompletionLogpsHead(model.lm_head)
    try:
        logps, entropies = local_forward(model, dict(inputs), keep, input_ids, head, 0.7, keys,
                                         compute_entropy=True)
        (logps * upstream).sum().backward()
        with torch.no_grad():  # as for the old policy's and the reference's log-probabilities
            quiet, no_entropy = local_forward(model, dict(inputs), keep, input_ids, head, 0.7, keys)
        plain = model(**inputs).logits  # unarmed: the plain layer again (rollouts, evaluation)
    finally:
        head.remove()
    grads = _grads(model)

    torch.testing.assert_close(logps, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropies, ref_entropies.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(quiet, ref_logps.detach(), atol=1e-5, rtol=1e-5)
    assert no_entropy is None and head.calls == 2 and plain.shape[-1] == model.lm_head.out_features
    assert set(grads) == set(ref_grads) and ("model.language_model.embed_tokens.weight" in grads) == head_trains
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_decisions():
    ok = {"head": "Linear"}
    assert why_not(ok) is None
    assert "padding-free" in why_not({**ok, "padding_free": True})
    assert "sequence parallelism" in why_not({**ok, "sequence_parallel_size": 2})
    # ZeRO-3 with a frozen output layer (LoRA) computes inside the layer's forward, where the weight is gathered
    # (tests/test_grpo.py: a two-process ZeRO-3 run equals ms-swift's path); a trained one is not proven.
    assert "ZeRO-3 with the output layer's weight trained" in why_not({**ok, "zero3_head_trains": True})
    assert why_not({**ok, "zero3_head_trains": False}) is None
    assert "not a plain Linear" in why_not({"head": "ModulesToSaveWrapper"})


class _Trainer:
    """The attributes of ms-swift's GRPOTrainer that `install` reads, around a real model; its own
    `_get_logps_via_local_forward` is ms-swift's."""

    def __init__(self, model, padding_free=False):
        from swift.rlhf_trainers.grpo_trainer import GRPOTrainer

        self._get_logps_via_local_forward = types.MethodType(GRPOTrainer._get_logps_via_local_forward, self)
        self.model = model
        self.accelerator = types.SimpleNamespace(unwrap_model=lambda m: m)
        self.template = types.SimpleNamespace(padding_free=padding_free, sequence_parallel_size=1,
                                              get_base_model=lambda m: m)
        self.temperature = 1.0
        self.model_kwarg_keys = inspect.signature(model.forward).parameters.keys()


@pytest.mark.slow
def test_install_falls_back_and_says_why_once(tiny, capsys):
    model, inputs = tiny
    trainer = _Trainer(model, padding_free=True)
    heads, decision = install(trainer)
    assert heads == {} and decision.startswith("completion log-probabilities: off (padding-free batches")
    assert trainer._get_logps_via_local_forward.__func__.__module__ == "swift.rlhf_trainers.grpo_trainer"

    trainer = _Trainer(model)
    heads, decision = install(trainer)
    assert trainer._get_logps_via_local_forward.__func__.__module__ == "src.training.completion_logps"
    assert decision.startswith("completion log-probabilities: on (the LM head scores completion tokens in chunks")
    try:
        # A second model (a reference) whose output layer is not a plain Linear: ms-swift's path, said once.
        other = type(model)(model.config)
        other.lm_head = torch.nn.Sequential(other.lm_head)
        other.get_output_embeddings = lambda: other.lm_head
        with torch.no_grad():
            for _ in range(2):
                logps, _ = trainer._get_logps_via_local_forward(other, dict(inputs), 4, inputs["input_ids"])
                assert logps.shape == (2, 4)
            mine, _ = trainer._get_logps_via_local_forward(model, dict(inputs), 4, inputs["input_ids"])
        out = capsys.readouterr().out
        assert out.count("completion log-probabilities: ms-swift's path for this model (the output layer is a "
                         "Sequential") == 1
        assert mine.shape == (2, 4) and heads[id(model.lm_head)].calls == 1
    finally:
        for head in heads.values():
            head.remove()
