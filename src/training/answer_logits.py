"""Answer-only logits: the LM head and the cross-entropy run only where a label is (`custom.answer_only_logits`).

ms-swift 4.6 trims the logits itself (`use_logits_to_keep`, on by default for Qwen3-VL under transformers 5):
at batch 1 it keeps exactly the labelled positions, at batch > 1 only a suffix as long as the longest answer
region in the batch (prompt and padding of the other rows included), and in both cases the kept logits are
materialised over the whole 151,936-token vocabulary, upcast to fp32, soft-maxed and kept for the backward
pass, plus their argmax for the token accuracy. Here, during training:

- the trainer's `compute_loss` arms the model's output layer with the batch's labels (as ms-swift left them,
  trimmed or not) and hands ms-swift a `compute_loss_func`, so that ms-swift calls the model without labels;
- the output layer, when armed, gathers the hidden states whose next token carries a label (per row: padding,
  prompts and images of any row are never projected) and computes the summed cross-entropy and each token's
  hit in chunks of rows (`linear_cross_entropy`): the gradients are formed chunk by chunk in the forward pass,
  so neither full-vocabulary logits nor their fp32 copy ever exist for the whole batch. With Liger installed
  and `use_liger_kernel` on a GPU, Liger's fused linear cross-entropy does that part instead;
- the `compute_loss_func` divides by ms-swift's token count (`num_items_in_batch`) and records `token_acc`
  as ms-swift's own `_compute_acc` does.

The loss and token accuracy are ms-swift's to float rounding (tests/test_answer_logits.py). Everything else
(the forward through DDP or DeepSpeed, the MoE auxiliary loss, `average_tokens_across_devices`, evaluation)
is ms-swift's, unchanged; where the path cannot reproduce ms-swift's loss (a `loss_type`, loss scales, DFT or
channel losses, label smoothing, sequence parallelism, `acc_strategy: seq`, an output layer that is not a
plain linear layer) it stays off and says why.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any

from src.training.flops import SCORED_ROWS_ATTR

IGNORE_INDEX = -100
# Rows of logits formed at once: 128 MiB of fp32 per chunk (220 rows of Qwen's vocabulary). Each chunk reads the
# whole head again, so small chunks starve the matrix products: on CPU with the tiny model's 64-wide head, 27-row
# chunks (16 MiB) ran both products at half the speed of 220-row ones (0.92 s against 0.46 s per 1,799 rows,
# one thread), and 440 rows or the whole batch at once gained nothing more. A GPU's small change.
CHUNK_BYTES = 128 * 2**20


def chunk_rows(vocab_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows of logits per chunk so that one chunk of fp32 logits takes about `chunk_bytes` (at least 1 row)."""
    return max(1, chunk_bytes // (4 * vocab_size))


def why_not(settings: Mapping[str, Any]) -> str | None:
    """Why the answer-only path cannot reproduce ms-swift's loss under these trainer settings, or None when it
    can. `settings`: ms-swift's argument values by name (`sequence_parallel_size`, `enable_dft_loss`,
    `enable_channel_loss`, `acc_strategy`, `label_smoothing_factor`, `task_type`, `tuner_backend`) plus
    `compute_loss_func` (whether the trainer has one: a `loss_type`) and `head` (the output layer's class
    name, which must be `Linear`)."""
    if settings.get("task_type", "causal_lm") != "causal_lm":
        return f"task_type is {settings['task_type']!r}, not causal_lm"
    if settings.get("compute_loss_func"):
        return "the trainer has its own loss function (training.loss_type)"
    if (settings.get("sequence_parallel_size") or 1) > 1:
        return "sequence parallelism splits the labels across ranks"
    for flag in ("enable_dft_loss", "enable_channel_loss"):
        if settings.get(flag):
            return f"training.{flag} needs every token's logits"
    if settings.get("label_smoothing_factor"):
        return "label smoothing needs every token's logits"
    if settings.get("acc_strategy", "token") != "token":
        return f"acc_strategy {settings['acc_strategy']!r}: only token accuracy is recorded here"
    if settings.get("tuner_backend") == "unsloth":
        return "unsloth computes its own loss"
    if settings.get("head") != "Linear":
        return (f"the output layer is a {settings.get('head')} (LoRA or modules_to_save on lm_head?), "
                "not a plain Linear")
    return None


def choose_kernel(use_liger_kernel: bool, liger_installed: bool, device_type: str) -> str:
    """`"liger"` (Liger's fused linear cross-entropy: Triton, so a GPU) when the run asks for Liger, it is
    installed and the head lives on CUDA; `"torch"` (this module's chunked computation) otherwise."""
    return "liger" if use_liger_kernel and liger_installed and device_type == "cuda" else "torch"


def _liger_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def first_max_is_target(logits, top, picked, targets):
    """Per row of `logits` (N, V): whether `argmax` (the FIRST index of the largest value, as ms-swift's token
    accuracy takes it) is the target, given each row's largest value `top` and the target's value `picked`.
    On CPU a full `argmax` costs about eight times `amax`: there only the rows whose target reaches the maximum
    are looked at again, for an equal value at an earlier index."""
    if logits.device.type != "cpu":
        return logits.argmax(dim=-1) == targets
    hit = picked == top
    for row in hit.nonzero()[:, 0].tolist():
        target = int(targets[row])
        if target and logits[row, :target].amax() == top[row]:
            hit[row] = False
    return hit


def _chunked_linear_ce():
    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        """Sum of cross-entropies of `hidden @ weight.T (+ bias)` against `targets`, and each row's hit (argmax
        equals the target), chunk by chunk; the gradients are formed in the forward pass, while each chunk's
        logits exist, and scaled by the incoming gradient in the backward pass."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, rows):
            need_h, need_w = hidden.requires_grad, weight.requires_grad
            need_b = bias is not None and bias.requires_grad
            grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            hits = torch.empty(targets.shape, dtype=torch.bool, device=hidden.device)
            for start in range(0, hidden.shape[0], rows):
                end = min(start + rows, hidden.shape[0])
                h, t = hidden[start:end], targets[start:end]
                # The same product as the layer's, then fp32, as transformers' loss upcasts it.
                logits = torch.nn.functional.linear(h, weight, bias)
                if logits.dtype != torch.float32:
                    logits = logits.float()
                top = logits.amax(dim=-1)
                picked = logits.gather(1, t[:, None])[:, 0]
                hits[start:end] = first_max_is_target(logits, top, picked, t)
                probs = torch.softmax(logits, dim=-1)
                del logits
                # -log p(target) = max + log(sum exp(x - max)) - x_target, and the largest probability is
                # exp(0) / sum exp(x - max): the log-sum-exp without another pass of exp over the vocabulary.
                total += (top - probs.amax(dim=-1).log() - picked).sum()
                if need_h or need_w or need_b:
                    probs[torch.arange(end - start, device=probs.device), t] -= 1.0  # softmax - one-hot
                    if need_h:
                        grad_h[start:end] = probs.to(weight.dtype) @ weight
                    if need_w:
                        grad_w += probs.T @ h.float()
                    if need_b:
                        grad_b += probs.sum(dim=0)
                del probs  # before the next chunk's: two chunk-sized blocks in turn, not three
            ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
            ctx.needs = (need_h, need_w, need_b)
            ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
            ctx.mark_non_differentiable(hits)
            return total, hits

        @staticmethod
        def backward(ctx, grad_total, _grad_hits):
            saved = iter(ctx.saved_tensors)
            grads = [next(saved) * grad_total if need else None for need in ctx.needs]
            grads = [None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes, strict=True)]
            return grads[0], grads[1], grads[2], None, None

    return ChunkedLinearCrossEntropy


_FUNCTION = None


def linear_cross_entropy(hidden, weight, bias, targets, rows: int | None = None):
    """(sum over rows of the cross-entropy of `linear(hidden, weight, bias)` against `targets` in fp32, a bool
    per row: its argmax equals its target), never holding more than `rows` rows of logits at once (default:
    `chunk_rows(vocab)`). Differentiable in `hidden`, `weight` and `bias` (the gradient of the sum).
    `hidden` (N, H), `weight` (V, H), `targets` (N,) of token ids (no ignore index: select the rows first)."""
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _chunked_linear_ce()
    return _FUNCTION.apply(hidden, weight, bias, targets, rows or chunk_rows(weight.shape[0]))


def liger_cross_entropy(hidden, weight, bias, targets):
    """As `linear_cross_entropy`, by Liger's fused linear cross-entropy (Triton: a GPU with liger-kernel)."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    out = liger_fused_linear_cross_entropy(hidden, weight, targets, bias=bias, reduction="sum",
                                           return_predicted_tokens=True)
    return out.loss, out.predicted_tokens == targets


def labelled_rows(labels):
    """(row, position) index pairs of the positions whose NEXT token carries a label, and those tokens: the
    positions a causal LM is scored on, per row, padding and prompt excluded. `labels` (B, K)."""
    import torch

    following = labels[:, 1:]
    keep = following != IGNORE_INDEX
    rows, positions = torch.nonzero(keep, as_tuple=True)
    return rows, positions, following[keep]


class AnswerOnlyHead:
    """The model's output layer made answer-only while armed; itself (its weights, its state-dict names, its
    hooks, as DeepSpeed ZeRO-3 gathers it) unchanged. Unarmed (evaluation, generation) it is the plain layer."""

    def __init__(self, head, kernel: str):
        self.head = head
        self.kernel = kernel
        self.labels = None  # the armed batch's labels, as the layer's input is aligned (trimmed or not)
        self.hits = None  # the last armed batch's hit per scored token
        self.calls = 0  # armed forward passes (tests read it)
        self._plain_forward = head.forward
        head.forward = types.MethodType(self._forward, head)

    def remove(self) -> None:
        """Give the layer back its own forward."""
        self.head.forward = self._plain_forward

    @contextmanager
    def armed(self, labels):
        """Within: the layer answers with the summed cross-entropy of `labels`' scored tokens (a 0-dim tensor)."""
        self.labels, self.hits = labels, None
        try:
            yield self
        finally:
            self.labels = None

    def _forward(self, layer, hidden):
        labels = self.labels
        if labels is None:
            return self._plain_forward(hidden)
        if hidden.shape[:2] != labels.shape:
            raise RuntimeError(f"answer-only logits: the output layer got hidden states of shape "
                               f"{tuple(hidden.shape)} for labels of shape {tuple(labels.shape)}; set "
                               f"custom.answer_only_logits: false for this model")
        rows, positions, targets = labelled_rows(labels.to(hidden.device))
        selected = hidden[rows, positions]
        self.calls += 1
        setattr(layer, SCORED_ROWS_ATTR, int(targets.numel()))  # the step accounting's FLOPs of the head
        if targets.numel() == 0:
            # Nothing to score: a zero that keeps the hidden states and the layer's own weights in the graph, so
            # every parameter gets its (zero) gradient and DDP, which waits for each one, does not hang.
            self.hits = targets.new_zeros(0, dtype=bool)
            zero = hidden.sum() * 0.0 + layer.weight.sum() * 0.0
            return zero if layer.bias is None else zero + layer.bias.sum() * 0.0
        compute = liger_cross_entropy if self.kernel == "liger" else linear_cross_entropy
        total, self.hits = compute(selected, layer.weight, layer.bias, targets)
        return total


def _settings(trainer, head) -> dict[str, Any]:
    args = trainer.args
    names = ("sequence_parallel_size", "enable_dft_loss", "enable_channel_loss", "acc_strategy",
             "label_smoothing_factor", "tuner_backend")
    settings = {name: getattr(args, name, None) for name in names}
    settings["sequence_parallel_size"] = getattr(trainer.template, "sequence_parallel_size", 1)
    settings["task_type"] = getattr(trainer, "task_type", "causal_lm")
    settings["compute_loss_func"] = trainer.compute_loss_func is not None
    settings["head"] = type(head).__name__
    return settings


def install(trainer) -> tuple[AnswerOnlyHead | None, str]:
    """Make ms-swift's SFT `trainer` train on answer-only logits; return (the armed head or None, a line saying
    what was decided and why). Call before `trainer.train()`; evaluation and generation stay ms-swift's."""
    base = trainer.template.get_base_model(trainer.model)
    head = base.get_output_embeddings()
    reason = why_not(_settings(trainer, head))
    if reason is not None:
        return None, f"answer-only logits: off ({reason}); ms-swift computes the loss over full logits"
    device_type = head.weight.device.type
    kernel = choose_kernel(bool(trainer.args.use_liger_kernel), _liger_installed(), device_type)
    answer_head = AnswerOnlyHead(head, kernel)
    trainer.compute_loss = _answer_only_compute_loss(trainer, trainer.compute_loss, answer_head)
    how = "Liger's fused linear cross-entropy" if kernel == "liger" else (
        f"chunks of {chunk_rows(head.out_features)} rows")  # out_features: ZeRO-3 leaves weight empty here
    return answer_head, f"answer-only logits: on (the LM head runs on labelled positions only, {how})"


def _answer_only_compute_loss(trainer, compute_loss: Callable, head: AnswerOnlyHead) -> Callable:
    def loss_from_head(outputs, labels, num_items_in_batch=None, loss_scale=None, trainer=trainer):
        total = outputs.logits  # the armed layer's answer: the summed cross-entropy
        outputs.logits = None  # nothing for ms-swift's own accuracy: it is recorded here
        hits = head.hits
        if hits.numel():
            trainer.custom_metrics["train"]["token_acc"].update(hits)
        count = num_items_in_batch if num_items_in_batch is not None else max(hits.numel(), 1)
        return total / count

    def answer_only_compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
        # Per batch: training only (evaluation keeps ms-swift's logits for its metrics), and never where ms-swift
        # would weight tokens (loss_scale) or a loss function of its own is set.
        applies = (model.training and inputs.get("labels") is not None and inputs.get("loss_scale") is None
                   and inputs.get("compute_loss_func") is None)
        if not applies:
            return compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        inputs["compute_loss_func"] = loss_from_head
        with head.armed(inputs["labels"]):
            return compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    return answer_only_compute_loss
