"""The answer log-probabilities (src/inference/fast_logprobs.py) equal ms-swift's own, computed faster."""

import torch
from swift.infer_engine.transformers_engine import TransformersEngine

from src.inference.fast_logprobs import install, preprocess_logits

SWIFTS_OWN = TransformersEngine.__dict__["preprocess_logits"].__func__


def _logits(batch: int, steps: int, vocab: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = [torch.randn(batch, vocab, generator=generator) * 4 for _ in range(steps)]
    ids = torch.randint(0, vocab, (batch, steps), generator=generator)
    ids[0, 1] = int(logits[1][0].argmax())  # a generated token that is also the most likely one
    return logits, ids


def test_the_same_tokens_values_and_order_as_ms_swift():
    logits, ids = _logits(batch=3, steps=5, vocab=1000, seed=0)
    for top in (None, 1, 3):
        ours, theirs = preprocess_logits(logits, ids, top), SWIFTS_OWN(logits, ids, top)
        assert [[list(step) for step in answer] for answer in ours] == \
               [[list(step) for step in answer] for answer in theirs]  # the generated token first, then the top
        values = [v for answer in ours for step in answer for v in step.values()]
        expected = [v for answer in theirs for step in answer for v in step.values()]
        assert torch.allclose(torch.tensor(values), torch.tensor(expected), rtol=0, atol=1e-5)
    assert len(ours[0][1]) == 3  # the generated token was the most likely one: counted once
    assert preprocess_logits(None, ids, None) is None


def test_install_puts_it_in_place_of_ms_swifts():
    original = TransformersEngine.__dict__["preprocess_logits"]
    try:
        install()
        install()
        assert TransformersEngine.preprocess_logits is preprocess_logits
    finally:
        TransformersEngine.preprocess_logits = original
