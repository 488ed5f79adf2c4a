"""Completion log-probabilities without full-vocabulary logits (stage 3, GRPO).

ms-swift 4.6's GRPO trainer (`_get_logps_via_local_forward`) asks the model for the logits of every completion
token at once: (completions, tokens, 151,936) in the model's dtype, divides them by the temperature in place and
soft-maxes them (trl's `selective_log_softmax`: in that dtype, row by row for bf16), keeping them for the backward
pass. At the GPU recipe's 8 completions of 2,048 tokens that is 5 GB per bf16 copy (10 GB in fp32); on CPU (fp32)
it was killed at 24 GB. It does so three times a
step: the old policy's and the reference's log-probabilities (no gradient) and the policy's (with one).

Here the trainer's `_get_logps_via_local_forward` arms the model's output layer with the completion tokens, then
runs the model as ms-swift does (through DDP or DeepSpeed, so their hooks fire). The armed layer answers with
each completion token's log-probability (B, K) in fp32, temperature applied, and, when ms-swift asks, each
position's entropy (detached: ms-swift only logs it and masks with it). It forms logits one chunk of rows at a
time (`chunk_rows`, as answer-only logits do) and never keeps them: the gradient of a token's log-probability
with respect to its hidden state, (W[token] - softmax @ W) / temperature, is formed in the forward pass while the
chunk exists (the same size as the hidden states); the backward pass scales it by the incoming gradient. Where
the output layer's weight itself trains (full fine-tuning), the backward pass recomputes each chunk's softmax
for the weight's gradient.

Under DeepSpeed ZeRO-3 the output layer's weight is a partition, empty outside the layer: the chunk size comes from
`out_features`, and everything that reads the weight runs inside the layer's forward, where DeepSpeed has gathered
it. With the weight frozen (LoRA, the stage-3 recipe) the backward needs only the hidden states' gradient formed
there, and a two-process ZeRO-3 GRPO run logs the loss, KL and gradient norm of ms-swift's own path to 1e-6
(tests/test_grpo.py). A trained weight under ZeRO-3 (full fine-tuning) would need the weight gathered again for
the backward's recomputation (DeepSpeed does so before a layer's backward, as for any linear layer) but is not
proven here: there the path stays off.

Log-probabilities, entropies and gradients equal ms-swift's own path to float rounding in fp32
(tests/test_completion_logps.py). In bf16 each chunk's logits are soft-maxed in fp32 where trl soft-maxes the bf16
logits in bf16: the values here are the more exact ones, and differ from ms-swift's by bf16's rounding (about
0.03 at a log-probability near -10). Where the path cannot apply it stays off and says why: padding-free batches
and sequence parallelism (ms-swift's other layouts), DeepSpeed ZeRO-3 with the output layer's weight trained
(not proven here), an output layer that is not a plain linear layer (LoRA or modules_to_save on lm_head).
`custom.completion_logps: false` turns it off (src/training/grpo.py).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any

from src.training.answer_logits import chunk_rows

DECISION_PREFIX = "completion log-probabilities:"


def off_line(reason: str) -> str:
    """The line a run prints when its completion log-probabilities stay on ms-swift's path, saying why."""
    return f"{DECISION_PREFIX} off ({reason}); ms-swift forms full-vocabulary logits"


def why_not(settings: Mapping[str, Any]) -> str | None:
    """Why the chunked path cannot stand in for ms-swift's under these settings, or None when it can.
    `settings`: `padding_free`, `sequence_parallel_size`, `head` (the output layer's class name, which must be
    `Linear`) and `zero3_head_trains` (its weight is a DeepSpeed ZeRO-3 partition AND trains). ZeRO-3 with the
    weight frozen (LoRA) is no reason: the armed layer computes inside its own forward, where DeepSpeed has
    gathered the weight, and the backward needs only the hidden states' gradient formed there."""
    if settings.get("padding_free"):
        return "padding-free batches: ms-swift's own layout of the completions"
    if (settings.get("sequence_parallel_size") or 1) > 1:
        return "sequence parallelism splits the completions across ranks"
    if settings.get("zero3_head_trains"):
        return ("DeepSpeed ZeRO-3 with the output layer's weight trained (full fine-tuning): its gradient under a "
                "partitioned weight is not proven here")
    if settings.get("head") != "Linear":
        return (f"the output layer is a {settings.get('head')} (LoRA or modules_to_save on lm_head?), "
                "not a plain Linear")
    return None


def _chunked_logps_function():
    import torch

    class ChunkedCompletionLogps(torch.autograd.Function):
        """log_softmax(linear(hidden, weight, bias) / temperature) at `targets`, per row, in fp32, and each row's
        entropy (not differentiable), `rows` rows of logits at a time; differentiable in hidden, weight, bias."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, temperature, rows, want_entropy, grad_enabled):
            n = hidden.shape[0]
            # Under no_grad (old policy, reference) nothing is formed for a backward pass, trainable or not.
            need_h, need_w = grad_enabled and hidden.requires_grad, grad_enabled and weight.requires_grad
            need_b = grad_enabled and bias is not None and bias.requires_grad
            logps = torch.empty(n, dtype=torch.float32, device=hidden.device)
            entropies = torch.empty(n if want_entropy else 0, dtype=torch.float32, device=hidden.device)
            # d logp / d hidden of each row, formed while its chunk's logits exist: (W[t] - p @ W) / T.
            jac_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
            for start in range(0, n, rows):
                end = min(start + rows, n)
                h, t = hidden[start:end], targets[start:end]
                # The layer's own product in its dtype, then fp32 and the temperature, as ms-swift and trl do.
                logp = torch.log_softmax(torch.nn.functional.linear(h, weight, bias).float() / temperature, dim=-1)
                logps[start:end] = logp.gather(1, t[:, None]).squeeze(1)
                if want_entropy:
                    entropies[start:end] = -(torch.exp(logp) * logp).sum(-1)
                if need_h:
                    p = logp.exp_()  # softmax, in place: logp is not needed after
                    jac_h[start:end] = (weight[t].float() - (p.to(weight.dtype) @ weight).float()) / temperature
            ctx.needs = (need_h, need_w, need_b)
            ctx.temperature, ctx.rows = temperature, rows
            # Under ZeRO-3 the weight is whole only inside the layer's forward and backward (DeepSpeed gathers it
            # before each): its shape is taken here, and the backward checks it finds the weight whole again.
            ctx.weight_shape = tuple(weight.shape)
            ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
            if need_w or need_b:  # the weight's gradient needs the incoming one: recomputed in backward
                ctx.save_for_backward(jac_h, hidden, weight, bias, targets)
            else:
                ctx.save_for_backward(jac_h)
            ctx.mark_non_differentiable(entropies)
            return logps, entropies

        @staticmethod
        def backward(ctx, grad_logps, _grad_entropies):
            need_h, need_w, need_b = ctx.needs
            saved = ctx.saved_tensors
            jac_h = saved[0]
            grad_h = (jac_h * grad_logps[:, None].float()).to(ctx.dtypes[0]) if need_h else None
            grad_w = grad_b = None
            if need_w or need_b:
                hidden, weight, bias, targets = saved[1:]
                if tuple(weight.shape) != ctx.weight_shape:
                    raise RuntimeError(f"completion log-probabilities: the output layer's weight is "
                                       f"{tuple(weight.shape)} in the backward pass, {ctx.weight_shape} in the "
                                       f"forward (a partition not gathered again?)")
                grad_w = torch.zeros(ctx.weight_shape, dtype=torch.float32, device=weight.device) if need_w else None
                grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
                for start in range(0, hidden.shape[0], ctx.rows):
                    end = min(start + ctx.rows, hidden.shape[0])
                    h, t, g = hidden[start:end], targets[start:end], grad_logps[start:end].float()
                    z = torch.nn.functional.linear(h, weight, bias).float() / ctx.temperature
                    # d logp_t / d z = onehot(t) - softmax(z), times the incoming gradient, over the temperature.
                    grad_z = torch.softmax(z, dim=-1).mul_(-g[:, None])
                    grad_z[torch.arange(end - start, device=z.device), t] += g
                    grad_z /= ctx.temperature
                    if need_w:
                        grad_w += grad_z.T @ h.float()
                    if need_b:
                        grad_b += grad_z.sum(dim=0)
                grad_w = None if grad_w is None else grad_w.to(ctx.dtypes[1])
                grad_b = None if grad_b is None else grad_b.to(ctx.dtypes[2])
            return grad_h, grad_w, grad_b, None, None, None, None, None

    return ChunkedCompletionLogps


_FUNCTION = None


def completion_logps(hidden, weight, bias, targets, temperature: float = 1.0, rows: int | None = None,
                     entropy: bool = False):
    """(log_softmax(linear(hidden, weight, bias) / temperature) at `targets` per row in fp32, each row's entropy
    in fp32 or None), never holding more than `rows` rows of logits at once (default: `chunk_rows(vocab)`).
    Differentiable in `hidden`, `weight` and `bias` for any incoming gradient; the entropies are not.
    `hidden` (N, H), `weight` (V, H), `targets` (N,) token ids."""
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _chunked_logps_function()
    import torch

    logps, entropies = _FUNCTION.apply(hidden, weight, bias, targets, float(temperature),
                                       rows or chunk_rows(weight.shape[0]), bool(entropy), torch.is_grad_enabled())
    return logps, entropies if entropy else None


class CompletionLogpsHead:
    """The model's output layer answering with completion log-probabilities while armed; itself (weights, names,
    hooks) unchanged. Unarmed (rollouts, evaluation) it is the plain layer."""

    def __init__(self, head):
        self.head = head
        self.targets = None  # the armed batch's completion tokens (B, K)
        self.temperature = 1.0
        self.entropy = False
        self.entropies = None  # the last armed pass's entropies (B, K), when asked for
        self.calls = 0  # armed forward passes
        self._plain_forward = head.forward
        head.forward = types.MethodType(self._forward, head)

    def remove(self) -> None:
        """Give the layer back its own forward."""
        self.head.forward = self._plain_forward

    @contextmanager
    def armed(self, targets, temperature: float, entropy: bool):
        """Within: the layer maps hidden states (B, S, H) to the log-probabilities (B, K) of `targets` (B, K), the
        last K tokens of each row, read at the K positions before the last (as ms-swift slices its logits)."""
        self.targets, self.temperature, self.entropy, self.entropies = targets, temperature, entropy, None
        try:
            yield self
        finally:
            self.targets = None

    def _forward(self, layer, hidden):
        targets = self.targets
        if targets is None:
            return self._plain_forward(hidden)
        batch, keep = targets.shape
        if hidden.dim() != 3 or hidden.shape[0] != batch or hidden.shape[1] < keep + 1:
            raise RuntimeError(f"completion log-probabilities: the output layer got hidden states of shape "
                               f"{tuple(hidden.shape)} for {batch} completions of {keep} tokens")
        # Position i predicts token i + 1: the K positions before the last hold the completion's tokens' scores.
        rows = hidden[:, -(keep + 1):-1, :].reshape(batch * keep, hidden.shape[-1])
        # Chunk size from out_features, not the weight: the same figure whether or not ZeRO-3 partitions it.
        logps, entropies = completion_logps(rows, layer.weight, layer.bias, targets.reshape(-1).to(hidden.device),
                                            self.temperature, rows=chunk_rows(layer.out_features),
                                            entropy=self.entropy)
        self.entropies = None if entropies is None else entropies.view(batch, keep)
        self.calls += 1
        return logps.view(batch, keep)


def _head_of(trainer, model):
    unwrapped = trainer.accelerator.unwrap_model(model)
    return trainer.template.get_base_model(unwrapped).get_output_embeddings()


def local_forward(model, model_inputs: dict[str, Any], logits_to_keep: int, input_ids, head: CompletionLogpsHead,
                  temperature: float, model_kwarg_keys, compute_entropy: bool = False):
    """What ms-swift's `_get_logps_via_local_forward` returns without padding-free batches, (log-probabilities
    (B, K) in fp32, entropies (B, K) or None), by one forward pass of `model` with `head` (its output layer)
    armed. `model_kwarg_keys`: the keyword arguments the model's forward takes (use_cache, logits_to_keep)."""
    if "use_cache" in model_kwarg_keys:
        model_inputs["use_cache"] = False
    if "logits_to_keep" in model_kwarg_keys:
        model_inputs["logits_to_keep"] = logits_to_keep + 1
    targets = input_ids[:, -logits_to_keep:]
    calls = head.calls
    with head.armed(targets, temperature, compute_entropy):
        logps = model(**model_inputs).logits
    if head.calls != calls + 1 or tuple(logps.shape) != tuple(targets.shape):
        raise RuntimeError(f"completion log-probabilities: the model answered with {tuple(logps.shape)} after "
                           f"{head.calls - calls} armed passes of its output layer; expected one pass and "
                           f"{tuple(targets.shape)}")
    return logps, head.entropies


def install(trainer) -> tuple[dict[int, CompletionLogpsHead], str]:
    """Make ms-swift's GRPO `trainer` compute completion log-probabilities chunk by chunk (this module); return
    (the armed heads by the id of their layer, filled as models are first seen: the policy, a reference or
    teacher model), the line saying what was decided for the policy and why). Call before `trainer.train()`."""
    heads: dict[int, CompletionLogpsHead] = {}
    refused: dict[int, str] = {}
    original: Callable = trainer._get_logps_via_local_forward
    template = trainer.template
    said: set[str] = set()

    def decide(layer) -> str | None:
        if id(layer) in heads:
            return None
        if id(layer) not in refused:
            reason = why_not({"padding_free": template.padding_free,
                              "sequence_parallel_size": getattr(template, "sequence_parallel_size", 1),
                              "zero3_head_trains": bool(hasattr(getattr(layer, "weight", None), "ds_id")
                                                        and layer.weight.requires_grad),
                              "head": type(layer).__name__})
            if reason is None:
                heads[id(layer)] = CompletionLogpsHead(layer)
                return None
            refused[id(layer)] = reason
        return refused[id(layer)]

    def get_logps_via_local_forward(self, model, model_inputs, logits_to_keep, input_ids, compute_entropy=False):
        layer = _head_of(self, model)
        reason = decide(layer)
        if reason is not None:
            if reason not in said:  # once per reason, not once per step
                said.add(reason)
                print(f"{DECISION_PREFIX} ms-swift's path for this model ({reason})", flush=True)
            return original(model, model_inputs, logits_to_keep, input_ids, compute_entropy=compute_entropy)
        return local_forward(model, model_inputs, logits_to_keep, input_ids, heads[id(layer)], self.temperature,
                             self.model_kwarg_keys, compute_entropy=compute_entropy)

    layer = _head_of(trainer, trainer.model)
    reason = decide(layer)
    if reason is not None:
        said.add(reason)
        return heads, off_line(reason)
    trainer._get_logps_via_local_forward = types.MethodType(get_logps_via_local_forward, trainer)
    rows = chunk_rows(layer.out_features)  # out_features: ZeRO-3 leaves the weight empty outside the forward
    return heads, (f"{DECISION_PREFIX} on (the LM head scores completion tokens in chunks of {rows} rows, fp32; "
                   "no full-vocabulary logits)")
