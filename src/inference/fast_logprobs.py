"""ms-swift's transformers engine computes answer log-probabilities 4x slower than it generates them.

`TransformersEngine.preprocess_logits` (ms-swift 4.6) sorts the whole vocabulary (151,936 entries for
Qwen3-VL) once per generated token and per answer, only to keep the top one, and moves each value to
Python separately. On CPU that sort is most of the time `src.infer` and the evaluation during training
spend generating (64 tokens for 4 answers on the tiny model: 2.9 s with log-probabilities, 0.74 s
without). ms-swift PR #9867 proposed the same change upstream: `topk` instead of the full sort, one
`log_softmax` and one gather per step for the whole batch. The result is the same structure and the same
values (see tests/test_fast_logprobs.py); `install()` puts it in place of ms-swift's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def preprocess_logits(batched_logits: Sequence[torch.Tensor] | None, batched_generate_ids: torch.Tensor,
                      top_logprobs: int | None) -> list[list[dict[int, float]]] | None:
    """What ms-swift's `TransformersEngine.preprocess_logits` returns, computed per step for the batch.

    `batched_logits` holds one `[batch, vocab]` tensor per generated step; `batched_generate_ids` is
    `[batch, steps]`. Per answer and step: a dict from token id to log-probability holding the generated
    token first, then the `top_logprobs` (default 1) most likely tokens, most likely first.
    """
    if batched_logits is None:
        return None
    k = top_logprobs or 1
    batch_size = batched_generate_ids.shape[0]
    steps = []
    for j, logits in enumerate(batched_logits):
        logprobs = torch.log_softmax(logits, -1)
        tokens = batched_generate_ids[:, j]
        chosen = logprobs.gather(1, tokens[:, None].to(logprobs.device))[:, 0]
        top_values, top_ids = logprobs.topk(k, dim=-1)
        steps.append((tokens.tolist(), chosen.tolist(), top_ids.tolist(), top_values.tolist()))
    batched = [[] for _ in range(batch_size)]
    for tokens, chosen, top_ids, top_values in steps:
        for i in range(batch_size):
            entry = {tokens[i]: chosen[i]}
            for token, value in zip(top_ids[i], top_values[i], strict=True):
                entry.setdefault(token, value)
            batched[i].append(entry)
    return batched


def install() -> None:
    """Make ms-swift's transformers engine use `preprocess_logits` (idempotent; the class is patched, so
    engines made before and after both use it)."""
    from swift.infer_engine.transformers_engine import TransformersEngine  # heavy

    TransformersEngine.preprocess_logits = staticmethod(preprocess_logits)
