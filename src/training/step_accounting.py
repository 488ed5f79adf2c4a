"""Where each training step's time goes: added to every training log line (console, logging.jsonl, TensorBoard).

Per logging window (the optimizer steps since the previous log line), measured in this process (under
several processes every rank measures its own steps and rank 0's line is the one written):

- `step_time_s`: mean wall time of a step, from the first `next(dataloader)` of the step to the end of its
  optimizer step (on a GPU after `torch.cuda.synchronize()`, so the step's kernels are inside it); logging,
  evaluation and saving between steps are not in it;
- `data_wait_share`: the share of that time spent blocked in `next(dataloader)` (collation and the copy to
  the device included);
- `tokens_per_s`: real (non-padding) tokens fed per second of step time; `real_tokens`, `loss_tokens`: the
  window's counts; `padding_share`: padding positions over all positions of the batches;
  `loss_token_share`: tokens with a label (`labels != -100`) over real tokens;
- `peak_memory_gib`: the process's peak so far: CUDA's max allocated on a GPU, the peak resident set on CPU;
- `mfu`: model FLOPs (src/training/flops.py, from the batches' real lengths and images) per second over the
  device's bf16 dense peak (`PEAK_BF16_TFLOPS`); absent on CPU, on an unknown GPU, outside bf16/fp16.

`flops_per_token` (decoder layers and LM head per token, as the recipe trains, freezes and recomputes) is
printed when training begins and logged with the first line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from transformers import TrainerCallback

from src.training.flops import (
    SCORED_ROWS_ATTR,
    ModelDims,
    Regime,
    UnsupportedModel,
    dims_from_config,
    flops_per_token,
    part_of,
    step_flops,
)

IGNORE_INDEX = -100
LOG_KEYS = ("step_time_s", "data_wait_share", "tokens_per_s", "real_tokens", "loss_tokens", "padding_share",
            "loss_token_share", "peak_memory_gib", "mfu")

# bf16 dense Tensor Core peaks in TFLOP/s, from NVIDIA's datasheets (they print the figure "with sparsity":
# the dense figure is half of it). Matched on torch.cuda.get_device_name(), most specific first; word
# boundaries keep GH200 / GB200 (other boards, other clocks) out.
PEAK_BF16_TFLOPS: tuple[tuple[str, float, str], ...] = (
    (r"\bA100\b", 312.0, "NVIDIA A100 datasheet: BFLOAT16 Tensor Core 312 TFLOPS (624 with sparsity)"),
    (r"\bH100\b.*\bPCIe\b", 756.0, "NVIDIA H100 datasheet, H100 PCIe: BF16 Tensor Core 1,513 TFLOPS with sparsity"),
    (r"\bH100\b.*\bNVL\b", 835.0, "NVIDIA H100 datasheet, H100 NVL: BF16 Tensor Core 1,671 TFLOPS with sparsity"),
    (r"\bH100\b", 989.0, "NVIDIA H100 datasheet, H100 SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity"),
    (r"\bH200\b.*\bNVL\b", 835.0, "NVIDIA H200 datasheet, H200 NVL: BF16 Tensor Core 1,671 TFLOPS with sparsity"),
    (r"\bH200\b", 989.0, "NVIDIA H200 datasheet, H200 SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity "
                         "(the H100 SXM's GH100 die)"),
    (r"\bB200\b", 2250.0, "NVIDIA HGX B200 datasheet: FP16/BF16 Tensor Core 4.5 PFLOPS per GPU with sparsity"),
)


def peak_bf16_flops(device_name: str) -> tuple[float, str] | None:
    """The bf16 dense peak (FLOP/s) of the GPU named `device_name` and where the figure comes from; None for a
    GPU not in `PEAK_BF16_TFLOPS`."""
    for pattern, tflops, source in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops * 1e12, source
    return None


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """What one micro-batch fed the model: positions (padding included), real tokens, tokens with a label,
    the real length of each sequence, and each image's patch count; `tokens=False` when the batch holds no
    token ids (GRPO feeds prompts and encodes them in its rollouts)."""

    positions: int = 0
    real: int = 0
    loss: int = 0
    seq_lens: tuple[int, ...] = ()
    image_patches: tuple[int, ...] = ()
    tokens: bool = True


def sequence_lengths(batch: Mapping) -> list[int]:
    """Real length of each sequence of a collated batch: the rows of a 2-D `attention_mask`; in a
    padding-free (packed) row, the runs between the restarts of `position_ids` at 0 (the text positions, row 0
    of Qwen3-VL's 3-D/4-D position ids); otherwise the full rows of `input_ids`."""
    mask = batch.get("attention_mask")
    if mask is not None and getattr(mask, "ndim", 0) == 2:
        return [int(n) for n in mask.sum(dim=1).tolist()]
    input_ids = batch["input_ids"]
    positions = batch.get("position_ids")
    if positions is not None and input_ids.shape[0] == 1:
        flat = positions.reshape(-1, positions.shape[-1])[0].tolist()
        starts = [i for i, p in enumerate(flat) if p == 0] or [0]
        ends = starts[1:] + [len(flat)]
        return [end - start for start, end in zip(starts, ends, strict=True)]
    return [int(input_ids.shape[1])] * int(input_ids.shape[0])


def count_batch(batch) -> BatchCounts:
    """The counts of one collated micro-batch (see `BatchCounts`)."""
    if not isinstance(batch, Mapping) or getattr(batch.get("input_ids"), "ndim", 0) != 2:
        return BatchCounts(tokens=False)
    input_ids = batch["input_ids"]
    seq_lens = sequence_lengths(batch)
    labels = batch.get("labels")
    loss = int((labels != IGNORE_INDEX).sum()) if labels is not None else 0
    patches = []
    for key in ("image_grid_thw", "video_grid_thw"):
        grid = batch.get(key)
        if grid is not None:
            patches += [int(t) * int(h) * int(w) for t, h, w in grid.tolist()]
    return BatchCounts(positions=int(input_ids.numel()), real=sum(seq_lens), loss=loss, seq_lens=tuple(seq_lens),
                       image_patches=tuple(patches))


@dataclass(slots=True)
class Window:
    """The steps since the last log line: their seconds, the seconds blocked on data, the counts and FLOPs."""

    steps: int = 0
    seconds: float = 0.0
    wait: float = 0.0
    positions: int = 0
    real: int = 0
    loss: int = 0
    flops: float = 0.0
    tokens: bool = False

    def add_batch(self, counts: BatchCounts) -> None:
        """Count one micro-batch into the window."""
        self.tokens = self.tokens or counts.tokens
        self.positions += counts.positions
        self.real += counts.real
        self.loss += counts.loss

    def add_step(self, seconds: float, wait: float, flops: float = 0.0) -> None:
        """Close one optimizer step that took `seconds`, `wait` of them blocked on data, worth `flops`."""
        self.steps += 1
        self.seconds += seconds
        self.wait += wait
        self.flops += flops


def window_figures(window: Window, peak_memory_gib: float, peak_flops: float | None) -> dict[str, float | int]:
    """The log keys (`LOG_KEYS`) of a window; the token keys only when its batches held tokens, `mfu` only with
    a peak and FLOPs. An empty window (no step) gives {}."""
    if window.steps == 0 or window.seconds <= 0:
        return {}
    figures: dict[str, float | int] = {
        "step_time_s": round(window.seconds / window.steps, 4),
        "data_wait_share": round(window.wait / window.seconds, 4),
    }
    if window.tokens and window.positions:
        figures.update({
            "tokens_per_s": round(window.real / window.seconds, 1),
            "real_tokens": window.real,
            "loss_tokens": window.loss,
            "padding_share": round(1 - window.real / window.positions, 4),
            "loss_token_share": round(window.loss / window.real, 4) if window.real else 0.0,
        })
    figures["peak_memory_gib"] = round(peak_memory_gib, 3)
    if peak_flops and window.flops:
        figures["mfu"] = round(window.flops / window.seconds / peak_flops, 4)
    return figures


def regime_from_model(model, recompute: frozenset[str], dims: ModelDims) -> Regime:
    """The `Regime` of a built model: its trainable matrices (`requires_grad`, two or more dimensions) by
    part, LoRA's (`lora_` in the name) counted as adapters too; DeepSpeed ZeRO-3's partitioned parameters by
    their full size (`ds_numel`); a mixture of experts' expert weights by the share a token is routed to."""
    text = dims.text
    routed = text.experts_per_token / text.experts if text.experts else 1.0
    adapters: dict[str, int] = {}
    trained: dict[str, int] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or len(getattr(param, "ds_shape", param.shape)) < 2:
            continue
        part = part_of(name, text.tied)
        if part is None:
            continue
        size = int(getattr(param, "ds_numel", param.numel()))
        if ".mlp.experts." in name:
            size = round(size * routed)
        trained[part] = trained.get(part, 0) + size
        if "lora_" in name:
            adapters[part] = adapters.get(part, 0) + size
    return Regime(adapters=adapters, trained=trained, recompute=recompute)


def peak_memory_gib(cuda: bool) -> float:
    """This process's peak memory so far in GiB: CUDA's max allocated on the current device, else the peak
    resident set size (Linux reports it in KiB)."""
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _TimedIterator:
    """`next()` of an iterator, with the seconds spent blocked in it summed in `waited`."""

    def __init__(self, iterator: Iterator):
        self.iterator = iterator
        self.waited = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.waited += time.perf_counter() - start


@dataclass(slots=True)
class _Model:
    dims: ModelDims | None = None
    regime: Regime | None = None
    flops_per_token: int | None = None
    peak_flops: float | None = None
    cuda: bool = False


class StepAccounting(TrainerCallback):
    """Measures each optimizer step (see the module docstring) and adds the figures to each training log.

    `install(trainer)` wraps the trainer's `get_batch_samples` (where transformers pulls a step's micro-batches
    from the dataloader) and `log` (so the figures reach every logger: console, logging.jsonl, TensorBoard,
    `log_history`), and registers this callback (step end). `say` prints a line (rank 0's)."""

    def __init__(self, say: Callable[[str], None] = print, gradient_checkpointing: bool = False,
                 vit_gradient_checkpointing: bool = False):
        self.say = say
        self.recompute = frozenset({"llm"} if gradient_checkpointing else set()) | frozenset(
            {"vision"} if vit_gradient_checkpointing else set())
        self.window = Window()
        self.model = _Model()
        self._step_start: float | None = None
        self._step_wait = 0.0
        self._step_counts: list[BatchCounts] = []
        self._head_positions: int | None = None  # None: the head never ran as a module this step
        self._first_log = True

    def install(self, trainer) -> StepAccounting:
        """Hook into `trainer` (a transformers Trainer); returns self."""
        get_batch_samples, log = trainer.get_batch_samples, trainer.log

        def timed_get_batch_samples(epoch_iterator, *args, **kwargs):
            if self._step_start is None:
                self._step_start, self._step_wait = time.perf_counter(), 0.0
                self._step_counts, self._head_positions = [], None
            timed = _TimedIterator(epoch_iterator)
            batches, num_items = get_batch_samples(timed, *args, **kwargs)
            self._step_wait += timed.waited
            for batch in batches:
                self._count(batch)
            return batches, num_items

        def log_with_figures(logs, *args, **kwargs):
            if "loss" in logs and self.window.steps:
                logs.update(self.figures())
            return log(logs, *args, **kwargs)

        trainer.get_batch_samples, trainer.log = timed_get_batch_samples, log_with_figures
        trainer.add_callback(self)
        return self

    def _count(self, batch) -> None:
        counts = count_batch(batch)
        self.window.add_batch(counts)
        if counts.tokens:
            self._step_counts.append(counts)

    def _step_flops(self) -> float:
        """Model FLOPs of the step's micro-batches; the LM head on the positions its forward computed (ms-swift's
        `logits_to_keep` keeps fewer, answer-only logits the labelled ones: `SCORED_ROWS_ATTR`), on every token
        where it never ran as a module (Liger's fused loss)."""
        model, counts = self.model, self._step_counts
        if model.dims is None or model.regime is None or not counts:
            return 0.0
        seq_lens = [n for c in counts for n in c.seq_lens]
        patches = [p for c in counts for p in c.image_patches]
        return float(step_flops(model.dims, model.regime, seq_lens, patches, self._head_positions))

    def _count_head_positions(self, module, args, output) -> None:
        scored = getattr(module, SCORED_ROWS_ATTR, None)  # answer-only logits: the rows it computed
        setattr(module, SCORED_ROWS_ATTR, None)
        if self._step_start is not None and args:
            rows = int(args[0].shape[:-1].numel()) if scored is None else scored
            self._head_positions = (self._head_positions or 0) + rows

    def figures(self) -> dict[str, float | int]:
        """The figures of the window so far (then a new window starts), `flops_per_token` with the first."""
        figures = window_figures(self.window, peak_memory_gib(self.model.cuda), self.model.peak_flops)
        if self._first_log and self.model.flops_per_token is not None:
            figures["flops_per_token"] = self.model.flops_per_token
        self._first_log = False
        self.window = Window()
        return figures

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch

        self.model = _Model(cuda=args.device.type == "cuda")
        notes = []
        config = getattr(model, "config", None)
        try:
            if config is None:
                raise UnsupportedModel("the trainer's model has no config")
            as_dict = config.to_dict()
            self.model.dims = dims_from_config(as_dict)
            self.model.regime = regime_from_model(model, self.recompute, self.model.dims)
            self.model.flops_per_token = flops_per_token(self.model.dims, self.model.regime)
            head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            if head is not None:
                head.register_forward_hook(self._count_head_positions)
            notes.append(f"flops_per_token={self.model.flops_per_token:.4g} (decoder layers and LM head; attention's "
                         "length term and the vision tower are added per batch)")
        except UnsupportedModel as err:
            notes.append(f"no FLOPs count, so no mfu: {err}")
        if not self.model.cuda:
            notes.append(f"no mfu on {args.device.type}")
        elif self.model.dims is not None:
            name = torch.cuda.get_device_name()
            peak = peak_bf16_flops(name)
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
            half = args.bf16 or args.fp16 or dtype in (torch.bfloat16, torch.float16)
            if peak is None:
                notes.append(f"no mfu: no bf16 peak known for {name!r} (src/training/step_accounting.py)")
            elif not half:
                notes.append(f"no mfu: the run is not in bf16/fp16 (the peak known for {name!r} is bf16's)")
            else:
                self.model.peak_flops = peak[0]
                notes.append(f"mfu against {name}'s bf16 dense peak, {peak[0] / 1e12:.0f} TFLOP/s ({peak[1]})")
        if state.is_world_process_zero:
            self.say("step accounting: " + "; ".join(notes))

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_start is None:
            return
        if self.model.cuda:
            import torch

            torch.cuda.synchronize()
        self.window.add_step(time.perf_counter() - self._step_start, self._step_wait, self._step_flops())
        self._step_start = None
