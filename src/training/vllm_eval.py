"""The evaluation during training with `eval.backend: vllm`: ms-swift's `VllmEngine` beside the trainer (on the
same GPU, `eval.vllm_gpu_memory_utilization` of it), loaded once from the model the run started from and given
the trained weights at each evaluation, LoRA merged in (as ms-swift's GRPO colocate mode does).

Loading the weights rather than serving the adapter as a LoRA works for every recipe: full training, LoRA,
and LoRA with whole modules saved beside it (`modules_to_save`: stage 2's aligner), which vLLM's LoRA cannot
load. vLLM runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, or ms-swift's `external_launcher` under
several processes) so its model can be reached.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from src.inference.engine import IMAGES_PER_QUESTION
from src.inference.vllm_args import max_model_len, vllm_engine_kwargs
from src.training.distributed import Job


def eval_engine_kwargs(cfg, job: Job) -> dict[str, Any]:  # noqa: ANN001 - ProjectConfig
    """`VllmEngine` kwargs for the evaluation during training: the run's starting model (`model.model`), no
    adapter (the trained weights are loaded at each evaluation), at most `eval.batch_size` sequences,
    `eval.vllm_gpu_memory_utilization`, one engine per process (tensor parallel 1; ms-swift's
    `external_launcher` when there are several, each with its own seed, as `swift infer` does)."""
    several = job.world_size > 1
    return vllm_engine_kwargs(
        str(cfg.swift["model"]), [], None, model_type=cfg.swift.get("model_type"),
        template_type=cfg.swift.get("template"), max_model_len=max_model_len(cfg, cfg.eval.max_new_tokens),
        images_per_prompt=IMAGES_PER_QUESTION, batch_size=cfg.eval.batch_size,
        gpu_memory_utilization=cfg.eval.vllm_gpu_memory_utilization,
        distributed_executor_backend="external_launcher" if several else None, seed=job.rank)


def hf_weight_name(name: str) -> str | None:
    """The checkpoint name of a PEFT model's state-dict entry (what vLLM's `load_weights` reads), or None for an
    entry that is not a model weight: LoRA factors, and the frozen copy peft keeps of a module it saves whole."""
    if ".lora_" in name or ".original_module." in name:
        return None
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".modules_to_save.default.",
                                                                                        ".")


def merged_weights(model) -> Iterator[tuple[str, Any]]:  # noqa: ANN001 - a (PEFT) transformers model
    """The model's weights under their checkpoint names, as (name, tensor), with each active LoRA's delta
    added to its layer's weight in a new tensor, one layer at a time. The model is left untouched (peft's
    merge_adapter + unmerge_adapter would leave bf16 rounding in the weights being trained)."""
    modules = dict(model.named_modules())
    for name, tensor in model.state_dict().items():
        clean = hf_weight_name(name)
        if clean is None:
            continue
        layer = modules.get(name.removesuffix(".base_layer.weight")) if name.endswith(".base_layer.weight") else None
        if layer is not None and hasattr(layer, "get_delta_weight") and not getattr(layer, "merged", False):
            for adapter in layer.active_adapters:
                if adapter in getattr(layer, "lora_A", {}):
                    tensor = tensor + layer.get_delta_weight(adapter)
        yield clean, tensor


def make_eval_engine(kwargs: dict[str, Any]):
    """The vLLM engine, made in this process (see the module docstring)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from swift import VllmEngine  # heavy; GPU machines with vllm only

    return VllmEngine(**kwargs)


def load_trained_weights(engine, model) -> None:  # noqa: ANN001 - ms-swift's VllmEngine, the trained model
    """Give the engine the trained model's current weights (LoRA merged), then drop what it cached from the
    previous weights (prefix and encoder caches)."""
    engine.inner_model.load_weights(merged_weights(model))
    for reset in ("reset_prefix_cache", "reset_encoder_cache"):
        if hasattr(engine.engine, reset):  # reset_encoder_cache exists from vLLM 0.16
            getattr(engine.engine, reset)()
