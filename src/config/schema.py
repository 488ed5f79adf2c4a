"""The typed project config: our own sections as dataclasses, ms-swift's sections checked against
`SftArguments` itself.

Every field here is required: the defaults live in `configs/base.yaml`, not in Python, so the YAML
a user reads is the whole truth. Field comments are the reference documentation of each key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError
from .excerpt import excerpt
from .loader import MergedConfig, Origin
from .offline import OFFLINE_ENV, VISION_ENV_TYPES
from .swift_fields import field_choices, rlhf_argument_fields, sft_argument_fields
from .types import checker_for, describe


@dataclass(frozen=True, kw_only=True, slots=True)
class CustomSection:
    """`custom:` (alias `data:`): the project's JSONL data and how it becomes conversations."""

    train_jsonl: str | list[str]  # training records (the JSONL contract): a file, a list of shards or a glob
    val_jsonl: str | list[str] | None  # validation records (a file, shards or a glob), or null for none
    emit_norm: Literal["none", "norm100", "norm1000"]  # coordinate space of the answers
    images_per_user_turn: int  # records grouped into one user turn (1 = one image per turn)
    augment_prob: float  # probability that a training sample is augmented (0 = never)
    augment: list[dict]  # augmentation operations in order, e.g. [{op: hflip, p: 0.5}] (src/datasets/augment.py)
    bad_records: Literal["error", "skip"]  # stop on an invalid record, or skip it and report it
    object_order: Literal["reading", "given"]  # order of objects in the answer
    health_check_samples: int  # first samples encoded and checked before training (0 = off)
    decode_images: bool  # validation decodes every image fully (truncated files found before step 1), not headers only
    cached_dataset: str | None  # a cache from `python -m src.datasets cache`: train on its encodings
    answer_only_logits: bool  # SFT: LM head and loss only on labelled positions (src/training/answer_logits.py)
    completion_logps: bool  # stage 3: completion log-probabilities chunk by chunk (src/training/completion_logps.py)


@dataclass(frozen=True, kw_only=True, slots=True)
class PromptsSection:
    """`prompts:`: which prompt scheme builds the user turn, with optional overrides."""

    scheme: str  # a name of PROMPT_SCHEMES in src/config/prompts.py (checked in rules.py)
    system: str | None  # replaces the scheme's system prompt when set
    user: str | None  # replaces the scheme's user prompt when set


@dataclass(frozen=True, kw_only=True, slots=True)
class DeepspeedSection:
    """`deepspeed:`: ZeRO for multi-GPU runs."""

    enabled: bool
    config: str | None  # a preset (rules.DEEPSPEED_PRESETS: zero0..zero3_offload) or a json path


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSection:
    """`run:`: how a run treats its output directory (`training.output_dir`)."""

    overwrite: bool  # true: start where a run is; the earlier run moves to output_dir/previous/<time>/
    init_from: str | None  # warm start from a checkpoint's weights (full or adapter), not a resume


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalSection:
    """`eval:`: grounding metrics by generation at each of the training's evaluations."""

    samples: int  # validation records the model answers at each evaluation (0 = off)
    pick: Literal["first", "sample"]  # the first `samples` records, or `samples` drawn with training.data_seed
    max_new_tokens: int  # longest answer generated (dense answers are long; the share cut off is reported)
    iou_type: Literal["auto", "bbox", "polygon"]  # as `python -m src.eval --iou_type`
    batch_size: int  # questions generated together per engine call (`src.infer --batch_size`)
    backend: Literal["transformers", "vllm"]  # ms-swift engine: transformers on the trained model, or vLLM beside it
    vllm_gpu_memory_utilization: float  # eval.backend vllm: the share of the GPU the vLLM engine takes


@dataclass(frozen=True, kw_only=True, slots=True)
class ProjectConfig:
    """A validated config: our sections, the ms-swift keys, and where every value came from."""

    custom: CustomSection
    prompts: PromptsSection
    deepspeed: DeepspeedSection
    run: RunSection
    eval: EvalSection
    env: dict[str, str]
    global_max_length: int | None
    swift: dict[str, Any]  # SftArguments (RLHFArguments with `rlhf:`) keyword arguments of the ms-swift sections
    merged: MergedConfig

    @property
    def reinforcement(self) -> bool:
        """True for a stage-3 config (`rlhf.rlhf_type` set): ms-swift's RLHF pipeline trains it."""
        return self.swift.get("rlhf_type") is not None

    def origin(self, dotted: str) -> Origin | None:
        """The file (and line) that set `dotted`, or None for a value the project derived."""
        return self.merged.origins.get(dotted)


OWN_SECTIONS = {"custom": CustomSection, "prompts": PromptsSection, "deepspeed": DeepspeedSection,
                "run": RunSection, "eval": EvalSection}
# `rlhf:` (stage 3) holds fields of ms-swift's RLHFArguments (GRPO's, and SftArguments' own such as
# `temperature`); a config with it trains with ms-swift's RLHF pipeline, the other sections meaning what
# they mean for SFT. A field set in two sections is an error.
SWIFT_SECTIONS = ("model", "template", "tuner", "training", "rlhf")
TOP_LEVEL_SCALARS = {"global_max_length": "Optional[int]", "env": "Dict[str, Any]"}
ALL_SECTIONS = (*OWN_SECTIONS, *SWIFT_SECTIONS, *TOP_LEVEL_SCALARS)
# SftArguments fields the project sets itself, from the key named here.
OWNED_SWIFT_FIELDS = {
    "dataset": "custom.train_jsonl",
    "val_dataset": "custom.val_jsonl",
    "deepspeed": "deepspeed.enabled / deepspeed.config",
    "tuner_type": "tuner.train_type",
}
# ms-swift fields refused in favour of one of our keys, which sets them with the rest of a run: ms-swift's
# `system` is written from `prompts.system` (or the scheme's), so the rows, args.json and inference agree.
REFUSED_SWIFT_FIELDS = {"system": "prompts.system"}
# ms-swift fields the project needs a value for (ms-swift itself would fall back to a default).
REQUIRED_SWIFT_KEYS = {"model.model": "a local model directory", "training.output_dir": "the run's directory"}
# Our name for a ms-swift field: (section, our key) -> (ms-swift field, annotation).
RENAMED_SWIFT_KEYS = {("tuner", "train_type"): ("tuner_type", "str")}


def where(config: ProjectConfig | MergedConfig, dotted: str) -> str:
    """`file:line: ` of the value at `dotted` in a config (typed or merged), or '' for a value the project derived."""
    origins = config.merged.origins if isinstance(config, ProjectConfig) else config.origins
    origin = origins.get(dotted)
    return f"{origin}: " if origin else ""


def _did_you_mean(name: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""


def _check_type(merged: MergedConfig, dotted: str, value: Any, annotation: str, problems: list[str]) -> None:
    if checker_for(annotation)(value):
        return
    if value is None:
        problems.append(
            f"{where(merged, dotted)}`{dotted}` is required and has no value: set it in your config "
            f"(expected {describe(annotation)})"
        )
    else:
        problems.append(
            f"{where(merged, dotted)}`{dotted}` = {excerpt(value)} has the wrong type: expected "
            f"{describe(annotation)}, got {type(value).__name__}{_yaml11_float_hint(value, annotation)}"
        )


def _yaml11_float_hint(value: Any, annotation: str) -> str:
    """For a string that reads as a number where a float is expected: YAML 1.1 (PyYAML) reads `1e-4` as a
    string, its floats need a dot (`1.0e-4`); say how to write it."""
    if not isinstance(value, str) or not checker_for(annotation)(0.5):
        return ""
    try:
        number = float(value.replace("_", ""))
    except ValueError:
        return ""
    exponent = f"{number:.1e}".replace("e-0", "e-").replace("e+0", "e+")
    written = exponent if "e" in value.lower() or "e" in repr(number) else repr(number)
    return (f"; YAML 1.1 reads {value} as a string (its floats need a dot, and a sign in an exponent): "
            f"write {written}")


def _own_section(merged: MergedConfig, name: str, cls: type, problems: list[str]) -> Any:
    block = merged.values.get(name)
    if not isinstance(block, dict):
        if block is not None:
            problems.append(f"{where(merged, name)}`{name}` must be a mapping, got {excerpt(block)}")
        elif name in merged.values and merged.origins.get(name):
            problems.append(f"{where(merged, name)}section `{name}` is set to null here, which drops every key of "
                            f"it (a null replaces the whole section of the files below): remove the line, or give "
                            f"the keys to change under it")
        else:
            problems.append(f"section `{name}` is missing: extend configs/base.yaml")
        return None
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    for key in block:
        if key not in fields:
            problems.append(f"{where(merged, f'{name}.{key}')}unknown key `{name}.{key}`"
                            f"{_did_you_mean(key, fields)} (allowed: {', '.join(fields)})")
    for key, annotation in fields.items():
        dotted = f"{name}.{key}"
        if key not in block:
            problems.append(f"`{dotted}` is missing: set it in your config or extend configs/base.yaml "
                            f"(expected {describe(annotation)})")
            continue
        _check_type(merged, dotted, block[key], annotation, problems)
    return block


def _swift_sections(merged: MergedConfig, problems: list[str]) -> dict[str, Any]:
    sft_fields, rlhf_fields = sft_argument_fields(), rlhf_argument_fields()
    kwargs: dict[str, Any] = {}
    set_by: dict[str, str] = {}
    for section in SWIFT_SECTIONS:
        fields = rlhf_fields if section == "rlhf" else sft_fields
        owner = "RLHFArguments fields" if section == "rlhf" else "SftArguments fields"
        block = merged.values.get(section) or {}
        if not isinstance(block, dict):
            problems.append(f"{where(merged, section)}`{section}` must be a mapping, got {excerpt(block)}")
            continue
        for key, value in block.items():
            dotted = f"{section}.{key}"
            renamed = RENAMED_SWIFT_KEYS.get((section, key))
            if renamed is None and key in REFUSED_SWIFT_FIELDS:
                ours = REFUSED_SWIFT_FIELDS[key]
                section_of, key_of = ours.split(".")
                problems.append(f"{where(merged, dotted)}`{dotted}` = {excerpt(value)}: the project writes ms-swift's "
                                f"`{key}` from `{ours}` (the same text in the rows, args.json and at inference); "
                                f"write `{section_of}: {{{key_of}: {excerpt(value)}}}` instead and remove `{dotted}`")
                continue
            if renamed is None and key in OWNED_SWIFT_FIELDS:
                problems.append(f"{where(merged, dotted)}`{dotted}` is set by the project: use "
                                f"`{OWNED_SWIFT_FIELDS[key]}` instead")
                continue
            if renamed is None and key not in fields:
                candidates = {*fields, *(k for s, k in RENAMED_SWIFT_KEYS if s == section)} - set(OWNED_SWIFT_FIELDS)
                if section != "rlhf" and key in rlhf_fields:
                    hint = "; it is an RLHF field: set it in `rlhf:`"
                else:
                    hint = _did_you_mean(key, candidates)
                problems.append(f"{where(merged, dotted)}unknown key `{dotted}`{hint} (keys here are ms-swift "
                                f"{owner})")
                continue
            field_name, annotation = renamed or (key, fields[key].annotation)
            if value is None and renamed is None and fields[key].default_is_none and dotted not in REQUIRED_SWIFT_KEYS:
                pass  # null is ms-swift's own default for this field, whatever its annotation says
            else:
                _check_type(merged, dotted, value, annotation, problems)
            _check_choice(merged, dotted, field_name, value, problems)
            if field_name in set_by:
                problems.append(f"{where(merged, dotted)}`{dotted}` and `{set_by[field_name]}` both set "
                                f"ms-swift's `{field_name}`; keep one")
            set_by[field_name] = dotted
            kwargs[field_name] = value
    if isinstance(merged.values.get("rlhf"), dict) and merged.values["rlhf"] and kwargs.get("rlhf_type") is None:
        problems.append(f"{where(merged, 'rlhf')}`rlhf:` is set but `rlhf.rlhf_type` is not: a stage-3 config names "
                        f"its method (`rlhf_type: grpo`); an SFT config has no `rlhf:` section")
    for dotted, what in REQUIRED_SWIFT_KEYS.items():
        section, key = dotted.split(".")
        block = merged.values.get(section)
        if not isinstance(block, dict) or block.get(key) is None:
            problems.append(f"{where(merged, dotted)}`{dotted}` is required and has no value: set it to {what} "
                            f"in your config ({section}: {{{key}: ...}})")
    return kwargs


def _check_choice(merged: MergedConfig, dotted: str, field_name: str, value: Any, problems: list[str]) -> None:
    """A string field whose value must be one of a set (ms-swift's tuners, transformers' strategies and
    schedulers: swift_fields.field_choices): refused here, not after the run directory is written."""
    choices = field_choices().get(field_name)
    if not choices or not isinstance(value, str) or value in choices:
        return
    if field_name == "tuner_type" and any(isinstance(block, dict) and block.get("external_plugins")
                                          for block in merged.values.values()):
        return  # a plugin may add its own tuner to ms-swift's map before the run looks it up
    what = ("a tuner ms-swift supports" if field_name == "tuner_type"
            else f"a value transformers takes for `{field_name}`")
    problems.append(f"{where(merged, dotted)}`{dotted}` = {excerpt(value)} is not {what}"
                    f"{_did_you_mean(value, choices)} (allowed: {', '.join(choices)})")


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a name every shell and os.environ take


def _flag(value: str) -> str:
    """A switch variable's meaning: huggingface_hub and tokenizers read 1/true/yes/on alike (and 0/false/...)."""
    lowered = value.strip().lower()
    return "on" if lowered in ("1", "true", "yes", "on") else "off" if lowered in ("0", "false", "no", "off") else value


def _env_problem(key: str, value: str) -> str | None:
    """Why `env.key: value` cannot be applied, or None."""
    if not ENV_NAME.fullmatch(key):
        return f"`env` key {excerpt(key)} is not a variable name: letters, digits and _, not starting with a digit"
    if "\0" in value:
        return f"`env.{key}` = {excerpt(value)}: holds a NUL character, which no environment variable can hold"
    if key in OFFLINE_ENV and _flag(value) != _flag(OFFLINE_ENV[key]):
        return (f"`env.{key}` = {excerpt(value)}: the project sets {key}={OFFLINE_ENV[key]} for every run "
                f"(src/config/offline.py: offline, no telemetry, no tokenizer threads) and `env:` cannot change it; "
                f"remove `env.{key}`")
    kind = VISION_ENV_TYPES.get(key)
    if kind is not None:
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number) or number <= 0:
            what = "a whole number" if kind is int else "a number"
            return (f"`env.{key}` = {excerpt(value)}: {key} must be {what} above 0 (ms-swift reads it with "
                    f"{kind.__name__}()), e.g. {'1024' if kind is int else '1.0'}")
    return None


def _env_section(merged: MergedConfig, problems: list[str]) -> dict[str, str]:
    block = merged.values.get("env") or {}
    if not isinstance(block, dict):
        problems.append(f"{where(merged, 'env')}`env` must be a mapping of NAME: value, got {excerpt(block)}")
        return {}
    env: dict[str, str] = {}
    for key, value in block.items():
        if not isinstance(value, (str, int, float, bool)) or isinstance(value, bool):
            problems.append(f"{where(merged, f'env.{key}')}`env.{key}` = {excerpt(value)}: expected a string or "
                            f"number")
            continue
        problem = _env_problem(str(key), str(value))
        if problem:
            problems.append(f"{where(merged, f'env.{key}')}{problem}")
            continue
        env[str(key)] = str(value)
    return env


def validate_config(merged: MergedConfig) -> ProjectConfig:
    """Check every key of a merged config and return the typed ProjectConfig.

    Raises one ConfigError listing every problem: unknown keys (with the file that introduced them
    and close matches), wrong types (key, value, expected type), missing required values.
    """
    problems: list[str] = []
    for key in merged.values:
        if key not in ALL_SECTIONS:
            problems.append(f"{where(merged, key)}unknown section `{key}`{_did_you_mean(key, ALL_SECTIONS)} "
                            f"(allowed: {', '.join(ALL_SECTIONS)}, extends)")
    sections = {name: _own_section(merged, name, cls, problems) for name, cls in OWN_SECTIONS.items()}
    swift_kwargs = _swift_sections(merged, problems)
    env = _env_section(merged, problems)
    global_max_length = merged.values.get("global_max_length")
    _check_type(merged, "global_max_length", global_max_length, "Optional[int]", problems)
    if problems:
        raise ConfigError(problems)
    return ProjectConfig(
        custom=CustomSection(**sections["custom"]),
        prompts=PromptsSection(**sections["prompts"]),
        deepspeed=DeepspeedSection(**sections["deepspeed"]),
        run=RunSection(**sections["run"]),
        eval=EvalSection(**sections["eval"]),
        env=env,
        global_max_length=global_max_length,
        swift=swift_kwargs,
        merged=merged,
    )
