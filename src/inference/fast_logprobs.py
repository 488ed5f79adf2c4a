"""ms-swift's transformers engine computes answer log-probabilities 4x slower than it generates them.

`TransformersEngine.preprocess_logits` (ms-swift 4.6) sorts the whole vocabulary (151,936 entries for
Qwen3-VL) once per generated token and per answer, only to keep the top one, and moves each value to
Python separately. On CPU that sort is most of the time `src.infer` and the evaluation during training
spend generating (64 tokens for 4 answers on the tiny model: 2.9 s with log-probabilities, 0.74 s
without). ms-swift PR #9867 proposed the same change upstream: `topk` instead of the full sort, one
`log_softmax` and one gather per step for the whole batch. The result is the same structure and the same
values (see tests/test_fast_logprobs.py); `install()` puts it in place of ms-swift's.

ms-swift also keeps every step's logits for that: `output_logits=True` makes transformers' `generate` hold an
fp32 copy of the full-vocabulary logits of each generated token until the answers are done, steps x batch x
151,936 x 4 bytes (a batch of 64 answers of 2,048 tokens: 80 GB). `install()` also makes the non-streaming
generation read each step's logits as the LM head gives them (a forward hook, so the values are generate's
own, before any logits processor) and keep only the top entries and the generated token's value
(`StepLogprobs`): at most two full rows are alive at any time.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar

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


class StepLogprobs:
    """Each generated step's log-probabilities as `preprocess_logits` reports them, without keeping the logits.

    `observe` (a forward hook on the LM head) takes the newest position's logits in fp32, their log-sum-exp and
    their top `top_logprobs` entries; the row itself waits only until the token generated from it is known.
    Called as a logits processor (last in generate's list, once per generated step), it marks the newest row as
    a real step and reads the token chosen at the step before from `input_ids`; `answers` reads the last step's
    token from the generated ids. A forward that no processor call follows (a process that has finished,
    waiting for the others under `synced_gpus`) generated nothing: its row is dropped.

    The per-step figures go into tensors allocated for `expected_steps` (doubled when exceeded): small tensors
    allocated at every step between the rows would fragment the CPU heap so that it grows by most of what
    keeping the logits costs (bench/generation_memory.py).
    """

    def __init__(self, top_logprobs: int | None, expected_steps: int | None = None):
        self.top = top_logprobs or 1
        self._capacity = min(expected_steps or 256, 4096)
        self.steps = 0
        self._buffers: tuple[torch.Tensor, ...] | None = None  # top ids, top values, chosen values, log-sum-exp
        self._unresolved: torch.Tensor | None = None  # the last step's row, until its token is known
        self._candidate: tuple[torch.Tensor, torch.Tensor] | None = None  # the newest forward's row, log-sum-exp
        self.most_full_rows = 0  # the most full-vocabulary rows held at once (what this saves is that it stays 2)

    def observe(self, module, args, output) -> None:
        """Forward hook on the LM head: the newest position's logits (`output` is [batch, seq, vocab])."""
        logits = output[0] if isinstance(output, tuple) else output
        row = logits[:, -1].to(torch.float32, copy=True)  # a copy: the head's output may span the whole prompt
        self._candidate = row, torch.logsumexp(row, -1)
        self.most_full_rows = max(self.most_full_rows, 1 + (self._unresolved is not None))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Logits processor: the candidate row becomes this step's; the previous step's token is the last input."""
        if self._candidate is None:
            raise RuntimeError("StepLogprobs: a generation step without an LM head call (is the hook on the head?)")
        row, lse = self._candidate
        if self._buffers is None or self.steps == self._buffers[0].shape[0]:
            self._grow(row)
        top_ids, top_values, _, lses = self._buffers
        if self._unresolved is not None:
            self._resolve(input_ids[:, -1])
        torch.topk(row, self.top, dim=-1, out=(top_values[self.steps], top_ids[self.steps]))
        lses[self.steps] = lse
        self._unresolved, self._candidate = row, None
        self.steps += 1
        return scores

    def _grow(self, row: torch.Tensor) -> None:
        steps = self._capacity if self._buffers is None else 2 * self._buffers[0].shape[0]
        batch = row.shape[0]
        grown = (torch.empty(steps, batch, self.top, dtype=torch.long, device=row.device),
                 *(torch.empty(shape, device=row.device) for shape in
                   ((steps, batch, self.top), (steps, batch), (steps, batch))))
        for old, new in zip(self._buffers or (), grown, strict=False):  # nothing to copy the first time
            new[:self.steps] = old[:self.steps]
        self._buffers = grown

    def _resolve(self, tokens: torch.Tensor) -> None:
        """The previous step's generated `tokens`: their logits, kept until the log-sum-exp is taken off."""
        _, _, chosen, _ = self._buffers
        torch.gather(self._unresolved, 1, tokens[:, None].to(self._unresolved.device),
                     out=chosen[self.steps - 1][:, None])
        self._unresolved = None

    def answers(self, generate_ids: torch.Tensor) -> list[list[dict[int, float]]]:
        """What `preprocess_logits` returns for these steps, `generate_ids` being generate's new tokens
        ([batch, steps])."""
        if self.steps == generate_ids.shape[1] + 1 and self._unresolved is not None:
            # transformers' DeferredStopCheck (Apple GPUs today) decides to stop one step late: one more forward
            # ran through the processors, and generate dropped its token. Its row is the unresolved one.
            self._unresolved, self.steps = None, self.steps - 1
        if generate_ids.shape[1] != self.steps:
            raise RuntimeError(f"StepLogprobs saw {self.steps} generation steps for {generate_ids.shape[1]} "
                               "generated tokens")
        batch_size = generate_ids.shape[0]
        batched = [[] for _ in range(batch_size)]
        if not self.steps:
            return batched
        if self._unresolved is not None:
            self._resolve(generate_ids[:, -1])
        self._candidate = None
        top_ids, top_values, chosen, lses = (buffer[:self.steps] for buffer in self._buffers)
        # log-probability = logit - log-sum-exp, per step and answer: [steps, batch] and [steps, batch, top]
        chosen, top_values = (chosen - lses).tolist(), (top_values - lses[..., None]).tolist()
        tokens, top_ids = generate_ids.T.tolist(), top_ids.tolist()
        for j in range(self.steps):
            for i in range(batch_size):
                entry = {tokens[j][i]: chosen[j][i]}
                for token, value in zip(top_ids[j][i], top_values[j][i], strict=True):
                    entry.setdefault(token, value)
                batched[i].append(entry)
        return batched


_ACTIVE: ContextVar[StepLogprobs | None] = ContextVar("step_logprobs", default=None)


def _preprocess_logits(batched_logits: Sequence[torch.Tensor] | None, batched_generate_ids: torch.Tensor,
                       top_logprobs: int | None) -> list[list[dict[int, float]]] | None:
    """`preprocess_logits`, or, within `_infer_full_without_logits`, the answers its `StepLogprobs` collected."""
    collector = _ACTIVE.get()
    if batched_logits is None and collector is not None:
        return collector.answers(batched_generate_ids)
    return preprocess_logits(batched_logits, batched_generate_ids, top_logprobs)


def _infer_full_without_logits(swifts_infer_full):
    def infer_full(self, inputs, *, generation_config, **kwargs):
        # Beam search reorders the rows between steps: the kept logits are the only faithful record there.
        if not getattr(generation_config, "output_logits", False) or (generation_config.num_beams or 1) > 1:
            return swifts_infer_full(self, inputs, generation_config=generation_config, **kwargs)
        from transformers import LogitsProcessorList  # heavy

        collector = StepLogprobs(kwargs["request_config"].top_logprobs, generation_config.max_new_tokens)
        generation_config.output_logits = False
        base = self.template.get_base_model(self.model)
        handle = base.get_output_embeddings().register_forward_hook(collector.observe)
        active = _ACTIVE.set(collector)
        try:
            return swifts_infer_full(self, {**inputs, "logits_processor": LogitsProcessorList([collector])},
                                     generation_config=generation_config, **kwargs)
        finally:
            _ACTIVE.reset(active)
            handle.remove()

    infer_full.keeps_no_logits = True
    return infer_full


def install() -> None:
    """Make ms-swift's transformers engine compute answers' log-probabilities with `preprocess_logits`, and its
    non-streaming generation keep no logits for them (`StepLogprobs`). Idempotent; the class is patched, so
    engines made before and after both use it."""
    from swift.infer_engine.transformers_engine import TransformersEngine  # heavy

    TransformersEngine.preprocess_logits = staticmethod(_preprocess_logits)
    if not getattr(TransformersEngine._infer_full, "keeps_no_logits", False):
        TransformersEngine._infer_full = _infer_full_without_logits(TransformersEngine._infer_full)
