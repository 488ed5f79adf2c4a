"""Cross-field and machine rules, checked in one pass after the types, before anything starts.

Each message says what is wrong and how to fix it. The packing and DeepSpeed rules look for the
packages with `importlib.util.find_spec` so no heavy import happens while validating.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from .errors import ConfigError
from .excerpt import excerpt
from .families import FAMILIES
from .jsonl import jsonl_files
from .prompts import PROMPT_SCHEMES
from .schema import ProjectConfig, where

DEEPSPEED_PRESETS = ("zero0", "zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")
# attn_impl values ms-swift accepts for packing / padding_free, and the modules each one needs.
FLASH_ATTENTION_MODULES = {
    # flash-attn 2 ships the compiled `flash_attn_2_cuda`; flash-attn-4 alone also provides `flash_attn`.
    "flash_attn": ("flash_attn", "flash_attn_2_cuda"),
    "flash_attention_2": ("flash_attn", "flash_attn_2_cuda"),
    "flash_attention_3": ("flash_attn_3", "flash_attn_interface"),
    "flash_attention_4": ("flash_attn.cute",),
}


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _existing_path_problems(cfg: ProjectConfig) -> list[str]:
    problems = []
    swift = cfg.swift
    checks = [
        ("model.model", swift.get("model"), "a model directory (config.json inside)", "dir"),
        ("custom.train_jsonl", cfg.custom.train_jsonl, "a JSONL file of training records", "file"),
        ("custom.val_jsonl", cfg.custom.val_jsonl, "a JSONL file of validation records", "file"),
        ("run.init_from", cfg.run.init_from, "a checkpoint directory", "dir"),
    ]
    # ms-swift's fields, named by the key that set them (`training.resume_from_checkpoint` or `tuner.` ...)
    for field, what, kind in (("adapters", "an adapter checkpoint directory", "any"),
                              ("ref_model", "a local model directory (this project runs offline)", "dir"),
                              ("ref_adapters", "an adapter checkpoint directory", "any"),
                              ("teacher_model", "a local model directory (this project runs offline)", "dir"),
                              ("teacher_adapters", "an adapter checkpoint directory", "any"),
                              ("reward_model", "a local model directory (this project runs offline)", "dir"),
                              ("reward_adapters", "an adapter checkpoint directory", "any")):
        if swift.get(field):
            checks.append((_swift_key(cfg, field), swift[field], what, kind))
    resume = swift.get("resume_from_checkpoint")
    if resume not in (None, "auto"):
        checks.append((_swift_key(cfg, "resume_from_checkpoint"), resume, "a checkpoint directory", "dir"))
    for field in ("output_dir", "logging_dir"):  # written at start: a file there fails in the run lock
        value = swift.get(field)
        if isinstance(value, str) and Path(value).exists() and not Path(value).is_dir():
            dotted = _swift_key(cfg, field)
            problems.append(f"{where(cfg, dotted)}`{dotted}` = {value}: is a file, not a directory; a run writes "
                            f"its directory there: point `{dotted}` elsewhere or move the file")
    for dotted, value, what, kind in checks:
        if dotted in ("custom.train_jsonl", "custom.val_jsonl"):
            try:
                value = jsonl_files(value, dotted)
            except ConfigError as err:
                problems.append(f"{where(cfg, dotted)}{err} (relative paths are relative to the YAML that sets "
                                f"them)")
                continue
        for item in ([value] if isinstance(value, str) else value or []):
            path = Path(item)
            ok = path.is_dir() if kind == "dir" else path.is_file() if kind == "file" else path.exists()
            if not ok:
                problems.append(f"{where(cfg, dotted)}`{dotted}` = {item}: path does not exist "
                                f"(expected {what}; relative paths are relative to the YAML that sets them)")
    return problems


def _family_problems(cfg: ProjectConfig) -> list[str]:
    """`model.model_type` names a family of FAMILIES the project trains (src/config/families.py)."""
    model_type = cfg.swift.get("model_type")
    family = FAMILIES.get(model_type or "")
    trained = ", ".join(name for name, f in FAMILIES.items() if f.trained)
    if family is None:
        return [f"{where(cfg, 'model.model_type')}`model.model_type` = {excerpt(model_type)} is not a family this "
                f"project trains; valid: {trained}"]
    if not family.trained:
        return [f"{where(cfg, 'model.model_type')}`model.model_type` = {excerpt(model_type)} is refused: "
                f"{family.refusal}; valid: {trained}"]
    template = cfg.swift.get("template")
    if template is not None and template != family.template:
        # Another family's template encodes images with the wrong hard-coded token ids (Qwen3.5's image
        # token is 248056, Qwen3-VL's 151655): training would run on images it never sees.
        return [f"{where(cfg, 'template.template')}`template.template` = {excerpt(template)} does not fit "
                f"`model.model_type` = {excerpt(model_type)}: set `template.template: {family.template}`"]
    return []


def _model_type_problems(cfg: ProjectConfig) -> list[str]:
    """`model.model_type` against the model directory's own config.json, before any model loads."""
    model_type, model = cfg.swift.get("model_type"), cfg.swift.get("model")
    config_file = Path(model or "") / "config.json"
    if model_type not in FAMILIES or not model or not config_file.is_file():
        return []
    try:
        found = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        return [f"{where(cfg, 'model.model')}`model.model` = {model}: its config.json is not a JSON object"]
    if found is None or found == model_type:
        return []
    fix = f"set `model.model_type: {found}`" if found in FAMILIES else "point `model.model` at a model of that family"
    return [f"{where(cfg, 'model.model_type')}`model.model_type` = {excerpt(model_type)}, but {config_file} says "
            f"model_type {excerpt(found)}: {fix}"]


def _packing_problems(cfg: ProjectConfig) -> list[str]:
    swift = cfg.swift
    feature = "packing" if swift.get("packing") else "padding_free" if swift.get("padding_free") else None
    if feature is None:
        return []
    attn = swift.get("attn_impl")
    allowed = ", ".join(FLASH_ATTENTION_MODULES)
    if attn not in FLASH_ATTENTION_MODULES:
        return [f"{where(cfg, f'training.{feature}')}`{feature}: true` needs a flash-attention "
                f"implementation, but `attn_impl` is {excerpt(attn)}: set model.attn_impl to one of {allowed} "
                f"(with its "
                f"package installed, see README 'Packing'), or set `training.{feature}: false`"]
    missing = [m for m in FLASH_ATTENTION_MODULES[attn] if not _module_available(m)]
    if missing:
        return [f"{where(cfg, f'training.{feature}')}`{feature}: true` with attn_impl={attn} needs the "
                f"module(s) {', '.join(missing)}, which are not installed on this machine. Install a "
                f"flash-attention build for your GPU (see README, 'Packing'), or set `training.{feature}: "
                f"false`. Packing cannot run on CPU."]
    return []


def _deepspeed_problems(cfg: ProjectConfig) -> list[str]:
    ds = cfg.deepspeed
    if not ds.enabled:
        return []
    if not ds.config:
        return [f"{where(cfg, 'deepspeed.enabled')}`deepspeed.enabled: true` needs `deepspeed.config`: a "
                f"preset ({', '.join(DEEPSPEED_PRESETS)}) or a json file such as configs/deepspeed/zero2.json"]
    problems = []
    if ds.config not in DEEPSPEED_PRESETS:
        path = Path(ds.config)
        if not path.is_absolute():
            problems.append(f"{where(cfg, 'deepspeed.config')}`deepspeed.config` = {excerpt(ds.config)} is neither a "
                            f"preset ({', '.join(DEEPSPEED_PRESETS)}) nor a json path")
        elif not path.is_file():
            problems.append(f"{where(cfg, 'deepspeed.config')}`deepspeed.config` = {ds.config}: file does not "
                            f"exist")
        else:
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                problems.append(f"{ds.config}:{err.lineno}:{err.colno}: invalid JSON in the DeepSpeed config "
                                f"({err.msg})")
    if not _module_available("deepspeed"):
        problems.append(f"{where(cfg, 'deepspeed.enabled')}`deepspeed.enabled: true` but the `deepspeed` "
                        f"package is not installed: `pip install -e '.[gpu]'`, or set deepspeed.enabled: false")
    return problems


def _liger_problems(cfg: ProjectConfig) -> list[str]:
    # Liger's fused linear cross-entropy never materialises the logits over the 151,936-token vocabulary:
    # dense answers are long, and those logits dominate a step's memory. Its kernels are Triton: GPU only.
    if not cfg.swift.get("use_liger_kernel"):
        return []
    prefix = where(cfg, "training.use_liger_kernel")
    if cfg.swift.get("use_cpu"):
        return [f"{prefix}`training.use_liger_kernel: true` needs a GPU (Liger's kernels are Triton), but "
                f"`use_cpu` is on: set use_liger_kernel: false for CPU runs"]
    if not _module_available("liger_kernel"):
        return [f"{prefix}`training.use_liger_kernel: true` but the `liger-kernel` package is not installed: "
                f"`pip install -e '.[gpu]'`, or set use_liger_kernel: false"]
    return []


def _offline_problems(cfg: ProjectConfig) -> list[str]:
    problems = []
    if cfg.swift.get("check_model", True):
        problems.append(f"{where(cfg, 'training.check_model')}`check_model` must be false: it contacts the "
                        f"model hub, and this project runs offline")
    if not cfg.swift.get("strict", False):
        problems.append(f"{where(cfg, 'training.strict')}`strict` must be true: without it ms-swift drops "
                        f"rows it cannot encode without stopping; use `custom.bad_records: skip` to skip "
                        f"invalid records visibly")
    return problems


def _length_problems(cfg: ProjectConfig) -> list[str]:
    """`global_max_length` sets both `max_length` and `max_model_len`: either one set to another value is refused
    (it would be silently replaced), naming both keys."""
    glob = cfg.global_max_length
    if glob is not None and glob <= 0:
        return [f"{where(cfg, 'global_max_length')}`global_max_length` must be positive, got {glob}"]
    problems = []
    for field in ("max_length", "max_model_len"):
        local = cfg.swift.get(field)
        if glob is not None and local is not None and glob != local:
            dotted = _swift_key(cfg, field)
            problems.append(f"{where(cfg, dotted)}`{dotted}` = {local} disagrees with `global_max_length` = {glob} "
                            f"({cfg.origin('global_max_length')}), which sets both max_length and max_model_len; "
                            f"set only one")
    return problems


def _prompt_problems(cfg: ProjectConfig) -> list[str]:
    if cfg.prompts.scheme in PROMPT_SCHEMES:
        return []
    return [f"{where(cfg, 'prompts.scheme')}`prompts.scheme` = {excerpt(cfg.prompts.scheme)} is not a prompt scheme; "
            f"valid: {', '.join(PROMPT_SCHEMES)} (src/config/prompts.py)"]


def _custom_problems(cfg: ProjectConfig) -> list[str]:
    problems = []
    if cfg.custom.train_jsonl == [] and not cfg.custom.cached_dataset:
        problems.append(f"{where(cfg, 'custom.train_jsonl')}`custom.train_jsonl` = []: no training data; name a "
                        f"JSONL file, a list of shards or a glob (or train on `custom.cached_dataset`)")
    if cfg.custom.images_per_user_turn < 1:
        problems.append(f"{where(cfg, 'custom.images_per_user_turn')}`custom.images_per_user_turn` must be "
                        f">= 1, got {cfg.custom.images_per_user_turn}")
    if not 0.0 <= cfg.custom.augment_prob <= 1.0:
        problems.append(f"{where(cfg, 'custom.augment_prob')}`custom.augment_prob` must be in [0, 1], got "
                        f"{cfg.custom.augment_prob}")
    if cfg.custom.health_check_samples < 0:
        problems.append(f"{where(cfg, 'custom.health_check_samples')}`custom.health_check_samples` must be "
                        f">= 0, got {cfg.custom.health_check_samples}")
    return problems


# ms-swift / transformers numeric fields and what they accept: (lowest, lowest allowed itself, highest or None,
# sentinel values with their meaning). transformers' max_steps -1 means "no step limit: num_train_epochs decides".
NUMERIC_RANGES: dict[str, tuple[float, bool, float | None, dict[float, str]]] = {
    "learning_rate": (0, False, None, {}),
    "vit_lr": (0, False, None, {}),
    "aligner_lr": (0, False, None, {}),
    "weight_decay": (0, True, None, {}),
    "max_grad_norm": (0, True, None, {}),
    "adam_epsilon": (0, True, None, {}),
    "adam_beta1": (0, True, 1, {}),
    "adam_beta2": (0, True, 1, {}),
    "warmup_ratio": (0, True, 1, {}),
    "warmup_steps": (0, True, None, {}),
    "lora_dropout": (0, True, 1, {}),
    "lora_rank": (1, True, None, {}),
    "lora_alpha": (0, False, None, {}),
    "num_train_epochs": (0, False, None, {}),
    "max_steps": (1, True, None, {-1: "no step limit: num_train_epochs decides"}),
    "save_steps": (0, False, None, {}),
    "eval_steps": (0, False, None, {}),
    "logging_steps": (0, False, None, {}),
    "save_total_limit": (1, True, None, {}),
    "per_device_train_batch_size": (1, True, None, {}),
    "per_device_eval_batch_size": (1, True, None, {}),
    "gradient_accumulation_steps": (1, True, None, {}),
    "dataloader_num_workers": (0, True, None, {}),
    "max_length": (1, True, None, {}),
    "seed": (0, True, None, {}),
    "data_seed": (0, True, None, {}),
}


def _swift_key(cfg: ProjectConfig, field: str) -> str:
    """The dotted key (`training.max_steps`) that set ms-swift's `field`, for messages."""
    for section in ("model", "template", "tuner", "training", "rlhf"):
        block = cfg.merged.values.get(section)
        if isinstance(block, dict) and field in block:
            return f"{section}.{field}"
    return field


def _number_leaves(values, prefix: str = "", origin_key: str = ""):
    """(dotted key, float, the key whose origin names its file:line) of every float, in mappings and lists alike:
    an item of a list is `key[i]`, placed at its list's line."""
    if isinstance(values, dict):
        for key, value in values.items():
            yield from _number_leaves(value, f"{prefix}{key}.", f"{prefix}{key}")
    elif isinstance(values, list):
        for i, value in enumerate(values):
            yield from _number_leaves(value, f"{prefix[:-1]}[{i}].", origin_key)
    elif isinstance(values, float):
        yield prefix[:-1], values, origin_key


def _numeric_problems(cfg: ProjectConfig) -> list[str]:
    """NaN and infinities anywhere (no setting means them), then the ranges of NUMERIC_RANGES: each refused with
    the key and what to write instead. A NaN learning rate otherwise fails after the model loads, naming nothing."""
    problems = []
    for dotted, value, origin_key in _number_leaves({k: v for k, v in cfg.merged.values.items() if k != "env"}):
        if not math.isfinite(value):
            problems.append(f"{where(cfg, origin_key)}`{dotted}` = {value}: not a finite number; write a number "
                            f"(`.nan`, `.inf` and numbers too large for a float have no meaning as a setting)")
    for field, (low, inclusive, high, sentinels) in NUMERIC_RANGES.items():
        value = cfg.swift.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if value in sentinels or ((value >= low if inclusive else value > low) and (high is None or value <= high)):
            continue
        dotted = _swift_key(cfg, field)
        allowed = f"{'>=' if inclusive else '>'} {low}" + (f" and <= {high}" if high is not None else "")
        allowed += "".join(f", or {k:g} ({meaning})" for k, meaning in sentinels.items())
        problems.append(f"{where(cfg, dotted)}`{dotted}` = {value}: out of range; allowed: {allowed}")
    if cfg.reinforcement:
        problems += _rlhf_range_problems(cfg)
    return problems


# Stage 3 (`rlhf:`): fields whose range only RLHF fixes (SFT's `temperature` 0 means greedy evaluation, but
# GRPO samples its rollouts at it: 0 divides the logits by zero). (lowest, lowest allowed itself).
RLHF_RANGES: dict[str, tuple[float, bool]] = {"temperature": (0, False), "beta": (0, True)}


def _rlhf_range_problems(cfg: ProjectConfig) -> list[str]:
    problems = []
    for field, (low, inclusive) in RLHF_RANGES.items():
        value = cfg.swift.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if value >= low if inclusive else value > low:
            continue
        dotted = _swift_key(cfg, field)
        problems.append(f"{where(cfg, dotted)}`{dotted}` = {value}: out of range for stage 3; allowed: "
                        f"{'>=' if inclusive else '>'} {low}")
    return problems


GROUNDING_METRICS = ("ap", "ap50", "ap75", "precision", "recall", "f1")  # eval_* keys that can pick the best


def evaluation_on(cfg: ProjectConfig) -> bool:
    """Whether training evaluates by generation: `eval.samples` > 0 and a validation set to answer."""
    return cfg.eval.samples > 0 and bool(cfg.custom.val_jsonl)


def _eval_problems(cfg: ProjectConfig) -> list[str]:
    problems = []
    if cfg.eval.samples < 0:
        problems.append(f"{where(cfg, 'eval.samples')}`eval.samples` must be >= 0 (0 turns the evaluation by "
                        f"generation off), got {cfg.eval.samples}")
    if cfg.eval.max_new_tokens < 1:
        problems.append(f"{where(cfg, 'eval.max_new_tokens')}`eval.max_new_tokens` must be >= 1, got "
                        f"{cfg.eval.max_new_tokens}")
    if cfg.eval.batch_size < 1:
        problems.append(f"{where(cfg, 'eval.batch_size')}`eval.batch_size` must be >= 1, got {cfg.eval.batch_size}")
    if not 0 < cfg.eval.vllm_gpu_memory_utilization < 1:
        problems.append(f"{where(cfg, 'eval.vllm_gpu_memory_utilization')}`eval.vllm_gpu_memory_utilization` = "
                        f"{cfg.eval.vllm_gpu_memory_utilization}: the share of the GPU vLLM takes beside the "
                        f"training; allowed: more than 0, less than 1")
    if cfg.eval.backend == "vllm" and evaluation_on(cfg):
        prefix = f"{where(cfg, 'eval.backend')}`eval.backend: vllm` needs"
        if cfg.swift.get("use_cpu"):
            problems.append(f"{prefix} a CUDA GPU, but `use_cpu` is on: set eval.backend: transformers for CPU runs")
        elif not _module_available("vllm"):
            problems.append(f"{prefix} the vllm package, which is not installed: pip install vllm (ms-swift 4.6 is "
                            f"tested with vllm 0.11.0 and 0.23.0), or set eval.backend: transformers")
    metric = cfg.swift.get("metric_for_best_model")
    if metric is not None:
        name = metric.removeprefix("eval_")
        allowed = ["loss", *GROUNDING_METRICS] if evaluation_on(cfg) else ["loss"]
        if name not in allowed:
            why = "" if evaluation_on(cfg) or name not in GROUNDING_METRICS else (
                " (the grounding metrics need the evaluation by generation: `eval.samples` > 0 and "
                "`custom.val_jsonl`)")
            problems.append(f"{where(cfg, 'training.metric_for_best_model')}`training.metric_for_best_model` = "
                            f"{excerpt(metric)} is not a metric this run's evaluation produces{why}; valid: "
                            f"{', '.join(allowed)}")
    return problems


def check_rules(cfg: ProjectConfig, *, check_paths: bool = True) -> None:
    """Raise one ConfigError listing every cross-field or machine problem of a typed config.

    `check_paths=False` skips the checks that need the files to exist (used to resolve shipped
    templates whose model path the user fills in).
    """
    problems = [*_numeric_problems(cfg), *_offline_problems(cfg),
                *_length_problems(cfg), *_prompt_problems(cfg), *_custom_problems(cfg),
                *_packing_problems(cfg), *_deepspeed_problems(cfg), *_liger_problems(cfg), *_eval_problems(cfg),
                *_family_problems(cfg)]
    if check_paths:
        problems += _existing_path_problems(cfg) + _model_type_problems(cfg)
    if problems:
        raise ConfigError(problems)
