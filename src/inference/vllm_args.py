"""What ms-swift 4.6's `VllmEngine` is given by `src.infer --backend vllm` and by the evaluation during
training with `eval.backend: vllm`.

Pure functions (no vllm, torch or swift import): vllm cannot run without a CUDA GPU, so the arguments are
what the CPU tests check. The constructor's names are those of `swift.infer_engine.vllm_engine.VllmEngine`
(ms-swift 4.6): `adapters` (one adapter at most; it turns `enable_lora` on and becomes the default LoRA
request of every `infer` call), `enable_lora`, `max_loras`, `max_lora_rank`, `max_model_len`,
`max_num_seqs`, `limit_mm_per_prompt`, `gpu_memory_utilization`, `tensor_parallel_size`,
`distributed_executor_backend`, `enable_sleep_mode`, `seed`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.config import ConfigError

# vLLM's LoRA slots are sized by `max_lora_rank`, which it accepts only from this list (vllm/config/lora.py).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def read_adapter_config(adapters: list[str]) -> dict[str, Any] | None:
    """The `adapter_config.json` of the one adapter (None without one). Raises ConfigError for more than one:
    ms-swift's VllmEngine serves a single adapter."""
    if not adapters:
        return None
    if len(adapters) > 1:
        raise ConfigError(f"--checkpoint: {len(adapters)} adapters {adapters}; vLLM serves one: merge them first "
                          f"(swift export --adapters ... --merge_lora true)")
    return json.loads((Path(adapters[0]) / "adapter_config.json").read_text(encoding="utf-8"))


def lora_settings(adapter: str, adapter_config: dict[str, Any]) -> dict[str, Any]:
    """`enable_lora`, `max_loras` and `max_lora_rank` for an adapter: the smallest rank vLLM accepts that holds
    the adapter's largest (`r`, `rank_pattern`).

    Raises ConfigError (naming the adapter, the value and what is allowed) for what vLLM's LoRA cannot load:
    whole modules saved in the adapter (`modules_to_save`, e.g. stage 2's aligner) or a rank above 512."""
    where = Path(adapter) / "adapter_config.json"
    saved = adapter_config.get("modules_to_save") or []
    if saved:
        raise ConfigError(f"{where}: modules_to_save = {saved}: vLLM's LoRA loads only low-rank weights, not whole "
                          f"modules; merge the adapter first (swift export --adapters {adapter} --merge_lora true) "
                          f"and pass the merged folder as --checkpoint, or use --backend transformers")
    ranks = [int(adapter_config.get("r") or 8), *(int(v) for v in (adapter_config.get("rank_pattern") or {}).values())]
    rank = max(ranks)
    fitting = [allowed for allowed in VLLM_LORA_RANKS if allowed >= rank]
    if not fitting:
        raise ConfigError(f"{where}: LoRA rank {rank} is above the {VLLM_LORA_RANKS[-1]} vLLM accepts "
                          f"(max_lora_rank one of {list(VLLM_LORA_RANKS)}); merge the adapter first")
    return {"enable_lora": True, "max_loras": 1, "max_lora_rank": fitting[0]}


def max_model_len(cfg, max_new_tokens: int) -> int | None:  # noqa: ANN001 - ProjectConfig
    """The longest sequence vLLM must hold: the training's `max_length` (every prompt fitted in it with its
    answer) plus the answer's `max_new_tokens`; None (the model's own context) when the config sets no
    length. Sizing it keeps vLLM from reserving KV cache for Qwen3-VL's 256k-token context."""
    length = cfg.global_max_length or cfg.swift.get("max_length")
    return int(length) + int(max_new_tokens) if length else None


def vllm_engine_kwargs(model: str, adapters: list[str], adapter_config: dict[str, Any] | None, *,
                       model_type: str | None, template_type: str | None, max_model_len: int | None,
                       images_per_prompt: int, batch_size: int, gpu_memory_utilization: float,
                       tensor_parallel_size: int = 1, distributed_executor_backend: str | None = None,
                       enable_sleep_mode: bool = False, seed: int | None = None) -> dict[str, Any]:
    """The keyword arguments of `VllmEngine(**kwargs)` for `model` (a base or merged model folder) and its
    adapter (at most one, with its `adapter_config.json` as read), as `make_engine` and the evaluation during
    training pass them.

    `max_num_seqs` is `batch_size` (the questions sent per call run together); images are limited to
    `images_per_prompt` per prompt and videos to none (vLLM profiles memory for that many); the adapter's
    LoRA settings come from `lora_settings`. Raises ConfigError for an adapter vLLM cannot load, or a
    `gpu_memory_utilization` outside (0, 1], `batch_size` or `tensor_parallel_size` below 1."""
    if not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(f"gpu_memory_utilization = {gpu_memory_utilization}: the share of the GPU's memory vLLM "
                          f"takes; allowed: more than 0, at most 1")
    if batch_size < 1 or tensor_parallel_size < 1:
        raise ConfigError(f"batch_size = {batch_size}, tensor_parallel_size = {tensor_parallel_size}: each must "
                          f"be >= 1")
    kwargs: dict[str, Any] = {
        "model_id_or_path": model, "model_type": model_type, "template_type": template_type,
        "max_model_len": max_model_len, "max_num_seqs": batch_size,
        "limit_mm_per_prompt": {"image": images_per_prompt, "video": 0},
        "gpu_memory_utilization": gpu_memory_utilization, "tensor_parallel_size": tensor_parallel_size,
        "enable_sleep_mode": enable_sleep_mode,
    }
    if distributed_executor_backend is not None:
        kwargs["distributed_executor_backend"] = distributed_executor_backend
    if seed is not None:
        kwargs["seed"] = seed
    if adapters:
        kwargs["adapters"] = list(adapters)
        kwargs.update(lora_settings(adapters[0], adapter_config or {}))
    return kwargs
