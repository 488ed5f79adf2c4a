"""Starting a run from an earlier one: warm start (weights only) versus resume (the same run continued).

- `run.init_from: CKPT` is a warm start: a full checkpoint becomes the model; an adapter checkpoint is
  merged into its base model first (into `<output_dir>/init_merged`), then becomes the model. The new
  run's own tuner (e.g. LLM LoRA) is then applied on top, with a fresh optimizer, scheduler and step.
- `tuner.resume_from_checkpoint: CKPT|auto` resumes: optimizer, scheduler, step and data position.
  Resuming only makes sense for a checkpoint of the same recipe; when CKPT was trained with another
  trainable set (the classic mistake of pointing stage 2 at a stage-1 checkpoint), the run is started
  as a warm start from CKPT instead, and the log says so.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.config import ConfigError
from src.training.checkpoint_guard import safetensors_problem
from src.training.run_dir import MERGE_TMP_PREFIX, complete_checkpoints

# The SftArguments that decide which parameters train; they must match for a true resume.
TRAINABLE_KEYS = ("tuner_type", "freeze_llm", "freeze_vit", "freeze_aligner", "target_modules", "modules_to_save",
                  "freeze_parameters", "trainable_parameters")


def checkpoint_kind(path: Path) -> str | None:
    """"adapter" (adapter_config.json), "full" (config.json with weights) or None for anything else."""
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return "full"
    return None


def warm_start_weights_problem(path: Path, kind: str) -> str | None:
    """Why the weights of the `kind` ("adapter" or "full") checkpoint `path` cannot be loaded whole, or None.

    An adapter needs adapter_model.safetensors (or .bin); a full checkpoint its *.safetensors files and the
    shards its index names. Safetensors files are checked against their header (cut short by a kill or a
    full disk). A checkpoint's trainer_state.json is not needed: a merged export has none.
    """
    if kind == "adapter":
        names = [n for n in ("adapter_model.safetensors", "adapter_model.bin") if (path / n).is_file()]
        if not names:
            return "no adapter weights (adapter_model.safetensors): the save did not finish?"
        files = [path / n for n in names if n.endswith(".safetensors")]
    else:
        files = sorted(path.glob("*.safetensors"))
        index = path / "model.safetensors.index.json"
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{index.name} is not a whole weight index (a torn write)"
            missing = sorted(s for s in shards if not (path / s).is_file())
            if missing:
                return f"{index.name} names shards that are missing: {', '.join(missing[:3])}"
    for file in files:
        problem = safetensors_problem(file)
        if problem:
            return f"{file.name}: {problem}"
    return None


def adapter_base_model(path: Path) -> str | None:
    """The base model an adapter checkpoint was trained on: its args.json's `model` (what ms-swift's merge
    loads), else adapter_config.json's `base_model_name_or_path`; None when neither says."""
    for name, key in (("args.json", "model"), ("adapter_config.json", "base_model_name_or_path")):
        try:
            value = json.loads((path / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and value:
            return value
    return None


def _config_model_type(model: Path) -> str | None:
    """The `model_type` in `model`/config.json, or None when there is none to read."""
    try:
        value = json.loads((model / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _base_hint(adapter: Path) -> str:
    base = adapter_base_model(adapter)
    return f" ({base}, by its args.json)" if base else ""


def _normalised(value: Any) -> Any:
    if value is None or value == []:
        return None  # ms-swift writes an unset list as [] in args.json and its default may be None
    return sorted(value) if isinstance(value, list) else value


def trainable_differences(checkpoint_args: dict[str, Any], run_kwargs: dict[str, Any],
                          defaults: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys of TRAINABLE_KEYS whose value in the checkpoint's args.json differs from this run's.

    `defaults` gives ms-swift's value for a key this run leaves unset.
    """
    diffs = {}
    for key in TRAINABLE_KEYS:
        ours = run_kwargs.get(key, defaults.get(key))
        theirs = checkpoint_args.get(key, defaults.get(key))
        if _normalised(ours) != _normalised(theirs):
            diffs[key] = (theirs, ours)
    return diffs


@dataclass(slots=True)
class StartPlan:
    """How a run starts: the model to load, the checkpoint to resume (if any), an adapter to merge first."""

    model: str | None
    resume_from_checkpoint: str | None
    merge_adapter: str | None = None
    messages: list[str] = field(default_factory=list)


def plan_start(kwargs: dict[str, Any], init_from: str | None, output_dir: Path,
               defaults: dict[str, Any], continuing: bool = False) -> StartPlan:
    """Decide warm start vs resume for `kwargs` (SftArguments kwargs, resume already resolved from `auto`).

    `continuing`: the resume is this run's own latest checkpoint (`auto` found one); with `init_from` set
    too, the run resumes on the model its warm start made (a stage-3 config keeps `run.init_from` and
    adds `tuner.resume_from_checkpoint: auto`). Raises ConfigError for an `init_from` that is neither an
    adapter nor a full checkpoint, or when both a warm start and an explicit resume are asked for.
    """
    plan = StartPlan(model=kwargs.get("model"), resume_from_checkpoint=kwargs.get("resume_from_checkpoint"))
    model = Path(plan.model) if plan.model else None
    if model is not None and (model / "adapter_config.json").is_file() and not (model / "config.json").is_file():
        # ms-swift would fail loading it ("Unrecognized model"), after the run directory was prepared.
        raise ConfigError(f"`model.model` = {model} is an adapter checkpoint, not a model: to start from it, set "
                          f"`run.init_from: {model}` (a warm start: merged into its base) and `model.model` to "
                          f"the base model{_base_hint(model)}")
    resume = plan.resume_from_checkpoint
    if init_from and resume and continuing:
        # `auto` found this run's own checkpoint: the warm start happened when the run began (its merge is in
        # the run directory); resuming continues on the same model.
        kind = checkpoint_kind(Path(init_from))
        if kind is None:
            raise ConfigError(f"cannot resume {resume}: the run started from `run.init_from` = {init_from}, which is "
                              f"no longer a checkpoint (moved or deleted?)")
        plan.model = init_from if kind == "full" else str(output_dir / "init_merged")
        if kind != "full" and not (output_dir / "init_merged" / "config.json").is_file():
            raise ConfigError(f"cannot resume {resume}: the run started from `run.init_from` = {init_from}, whose "
                              f"merge ({output_dir / 'init_merged'}) is gone")
        plan.messages.append(f"resuming {resume}; the run began as a warm start from {init_from}")
        return plan
    if init_from and resume:
        raise ConfigError(f"`run.init_from` ({init_from}) starts a new run from weights and "
                         f"`tuner.resume_from_checkpoint` ({resume}) continues an old one: set only one")
    if resume and not init_from:
        args_file = Path(resume) / "args.json"
        if args_file.is_file():
            diffs = trainable_differences(json.loads(args_file.read_text(encoding="utf-8")), kwargs, defaults)
            if diffs:
                listed = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in diffs.items())
                plan.messages.append(
                    f"resume_from_checkpoint {resume} was trained with another trainable set ({listed}); "
                    f"starting a new run from its weights instead (a warm start). To say so explicitly, use "
                    f"`run.init_from: {resume}` and leave resume_from_checkpoint unset.")
                init_from, plan.resume_from_checkpoint = resume, None
    if init_from:
        kind = checkpoint_kind(Path(init_from))
        if kind is None:
            # The classic slip: the stage-1 run directory instead of one of its checkpoints.
            whole = complete_checkpoints(Path(init_from))
            hint = (f"; it is a run directory: its newest whole checkpoint is {whole[-1]}, set `run.init_from` to "
                    f"that" if whole else "")
            raise ConfigError(f"`run.init_from` = {init_from} is neither an adapter checkpoint "
                             f"(adapter_config.json) nor a full checkpoint (config.json + *.safetensors){hint}")
        # Before rank 0 fills the run directory: a torn save or a base model that has moved would otherwise
        # fail inside ms-swift's merge or model loading, with a traceback and a half-prepared run directory.
        problem = warm_start_weights_problem(Path(init_from), kind)
        if problem:
            raise ConfigError(f"`run.init_from` = {init_from} cannot start a run: {problem}")
        # The model that will load: the checkpoint itself, or the adapter's base. Its family must be the config's
        # (the rule `model.model` already meets), or ms-swift builds the wrong architecture around its weights.
        loaded = Path(init_from) if kind == "full" else Path(adapter_base_model(Path(init_from)) or "")
        found, ours_type = _config_model_type(loaded), kwargs.get("model_type")
        if found and ours_type and found != ours_type:
            raise ConfigError(f"`run.init_from` = {init_from} is a {found} model ({loaded / 'config.json'}), but "
                              f"`model.model_type` is {ours_type}: a warm start keeps the family; set "
                              f"`model.model_type: {found}` (and its template) or start from a {ours_type} checkpoint")
        if kind == "adapter":
            base = adapter_base_model(Path(init_from))
            if base is not None and not Path(base).is_dir():
                raise ConfigError(
                    f"`run.init_from` = {init_from} is an adapter trained on the base model {base} (its args.json), "
                    f"which is not there any more: the warm start merges the adapter into the model it was "
                    f"trained on. Put that model back at {base}, or start from a merged checkpoint "
                    f"(`swift export --adapters {init_from} --merge_lora true`) as a full checkpoint")
            ours = kwargs.get("model")
            if base is not None and ours and os.path.realpath(base) != os.path.realpath(ours):
                plan.messages.append(f"warm start: the adapter {init_from} was trained on {base}; it is merged "
                                     f"into that model, not into `model.model` ({ours})")
        if kind == "full":
            plan.model = init_from
            plan.messages.append(f"warm start: weights from the full checkpoint {init_from}")
        else:
            plan.merge_adapter = init_from
            plan.model = str(output_dir / "init_merged")
            plan.messages.append(f"warm start: the adapter {init_from} is merged into its base model "
                                 f"({plan.model}), then this run's tuner is applied")
    return plan


def merge_adapter(adapter: str, out_dir: Path) -> Path:
    """Merge an adapter checkpoint into its base model with ms-swift's export; return the merged directory.

    ms-swift would import the plugins the adapter's args.json names (its run's image budget,
    src/training/swift_plugin.py) into this process: on rank 0 only, and failing when that run directory
    has moved. This run's image budget is its own config's, so the export reads a copy of the adapter whose
    args.json names no plugin.
    """
    import tempfile

    from swift import ExportArguments, export_main  # heavy

    from src.config.remote_code import apply_remote_code_policy

    apply_remote_code_policy()  # no code from the model directory runs unless the config trusts it

    with tempfile.TemporaryDirectory(prefix=MERGE_TMP_PREFIX, dir=out_dir.parent) as tmp:
        copy = Path(tmp) / Path(adapter).name
        shutil.copytree(adapter, copy, ignore=shutil.ignore_patterns("optimizer.pt", "global_step*", "rng_state*",
                                                                      "scheduler.pt", "trainer_state.json"))
        args_file = copy / "args.json"
        if args_file.is_file():
            args = json.loads(args_file.read_text(encoding="utf-8"))
            args_file.write_text(json.dumps({**args, "external_plugins": []}, ensure_ascii=False), encoding="utf-8")
        export_main(ExportArguments(adapters=[str(copy)], merge_lora=True, output_dir=str(out_dir)))
    return out_dir
