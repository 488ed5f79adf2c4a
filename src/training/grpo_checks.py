"""What a stage-3 (GRPO) config must get right before anything starts: ms-swift would otherwise fail late
(an unknown reward when the trainer is built) or not at all (a warm start without a stage-2 result).

Each check returns messages naming the key, the value and what is allowed; `resolve_run`
(src/training/resolve.py) raises them with every other rule's as one ConfigError (exit 2), on every rank
before the model loads.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection

from src.config import ProjectConfig
from src.config.prompts import PROMPT_SCHEMES
from src.config.schema import where
from src.config.swift_fields import builtin_reward_names, rlhf_argument_fields, swift_defaults
from src.datasets.plan import answers_with_geometry
from src.rewards import REWARDS

RL_TYPES = ("grpo",)


def valid_reward_names() -> tuple[str, ...]:
    """The project's grounding rewards, then ms-swift's own."""
    return (*REWARDS, *builtin_reward_names())


def generation_batch(swift: dict, world_size: int) -> int:
    """The completions generated per step across the job, as ms-swift computes it: `generation_batch_size`,
    or per-device batch x processes x `steps_per_generation` (default: `gradient_accumulation_steps`)."""
    if swift.get("generation_batch_size"):
        return int(swift["generation_batch_size"])
    per_device = int(swift.get("per_device_train_batch_size") or 1)
    steps = swift.get("steps_per_generation") or swift.get("gradient_accumulation_steps") or 1
    return per_device * world_size * int(steps)


def generation_batch_problems(cfg: ProjectConfig, world_size: int) -> list[str]:
    """What ms-swift's RLHFArguments would refuse about `rlhf.generation_batch_size` / `steps_per_generation` for
    a job of `world_size` processes, only once the run directory was prepared (a ValueError and its traceback):
    a generation batch that is not whole steps of the global batch (per-device batch x processes), both set
    and not agreeing, or steps_per_generation below 1."""
    swift = cfg.swift
    per_device = int(swift.get("per_device_train_batch_size") or 1)
    global_batch = per_device * world_size
    size, steps = swift.get("generation_batch_size"), swift.get("steps_per_generation")
    across = f"{world_size} process(es) x `training.per_device_train_batch_size` {per_device}"
    if steps is not None and int(steps) < 1:
        return [f"{where(cfg, 'rlhf.steps_per_generation')}`rlhf.steps_per_generation` = {steps}: at least 1"]
    if size is None:
        return []
    if steps is None and int(size) % global_batch:
        fits = [n * global_batch for n in range(1, 5)]
        return [f"{where(cfg, 'rlhf.generation_batch_size')}`rlhf.generation_batch_size` = {size} is not a whole "
                f"number of steps of the global batch ({global_batch} = {across}): use a multiple of "
                f"{global_batch} ({', '.join(map(str, fits))}, ...), or set `rlhf.steps_per_generation` instead"]
    if steps is not None and int(size) != global_batch * int(steps):
        return [f"{where(cfg, 'rlhf.generation_batch_size')}`rlhf.generation_batch_size` = {size} and "
                f"`rlhf.steps_per_generation` = {steps} disagree: ms-swift needs generation_batch_size = "
                f"{global_batch} ({across}) x steps_per_generation = {global_batch * int(steps)}; set only one"]
    return []


def reinforcement_problems(cfg: ProjectConfig, world_size: int, vllm_installed: bool | None = None,
                           builtin: Collection[str] | None = None) -> list[str]:
    """Every problem of a stage-3 config for a job of `world_size` processes (empty for an SFT config)."""
    if not cfg.reinforcement:
        return []
    swift, problems = cfg.swift, []
    if swift["rlhf_type"] not in RL_TYPES:
        problems.append(f"{where(cfg, 'rlhf.rlhf_type')}`rlhf.rlhf_type` = {swift['rlhf_type']!r}: stage 3 "
                        f"trains {', '.join(RL_TYPES)} only")
    if not cfg.run.init_from:
        problems.append(f"{where(cfg, 'run.init_from')}`run.init_from` is not set: stage 3 starts from a stage-2 "
                        f"result (its checkpoint directory, adapter or full)")
    funcs = swift.get("reward_funcs") or []
    valid = valid_reward_names() if builtin is None else (*REWARDS, *builtin)
    if not funcs:
        problems.append(f"`rlhf.reward_funcs` is empty: name at least one reward; valid: {', '.join(valid)}")
    for name in funcs:
        if name not in valid:
            problems.append(f"{where(cfg, 'rlhf.reward_funcs')}`rlhf.reward_funcs` names {name!r}, which is not a "
                            f"reward; valid: {', '.join(valid)}")
    weights = swift.get("reward_weights")
    if weights is not None and len(weights) != len(funcs):
        problems.append(f"{where(cfg, 'rlhf.reward_weights')}`rlhf.reward_weights` has {len(weights)} weight(s) "
                        f"for {len(funcs)} reward(s) in `rlhf.reward_funcs`: give one weight per reward, in order")
    problems += generation_batch_problems(cfg, world_size)
    generations = int(swift.get("num_generations") or rlhf_argument_fields()["num_generations"].default)
    batch = generation_batch(swift, world_size)
    if generations < 2:
        problems.append(f"{where(cfg, 'rlhf.num_generations')}`rlhf.num_generations` = {generations}: GRPO "
                        f"compares at least 2 completions per prompt")
    elif batch % generations:
        fits = [n for n in range(2, batch + 1) if batch % n == 0]
        problems.append(
            f"{where(cfg, 'rlhf.num_generations')}`rlhf.num_generations` = {generations} does not divide the "
            f"{batch} completions generated per step ({world_size} process(es) x per_device_train_batch_size "
            f"x steps_per_generation): valid num_generations: {', '.join(map(str, fits)) or 'none'}; or change "
            f"`training.per_device_train_batch_size` / `rlhf.steps_per_generation`")
    evaluating = (swift.get("eval_strategy") or swift_defaults().get("eval_strategy") or "no") != "no"
    eval_generations = int(swift.get("num_generations_eval") or generations)
    eval_batch = int(swift.get("per_device_eval_batch_size") or swift_defaults().get("per_device_eval_batch_size")
                     or 1) * world_size
    if evaluating and cfg.custom.val_jsonl and generations >= 2 and eval_batch % eval_generations:
        problems.append(
            f"{where(cfg, 'training.per_device_eval_batch_size')}the {eval_batch} completions of an evaluation step "
            f"({world_size} process(es) x `training.per_device_eval_batch_size`) are not a multiple of "
            f"`rlhf.num_generations_eval` ({eval_generations}, default `rlhf.num_generations`): set "
            f"`training.per_device_eval_batch_size` so that processes x it is a multiple of {eval_generations}, or "
            f"`rlhf.num_generations_eval` to a divisor of {eval_batch}")
    if swift.get("use_vllm") and not (vllm_installed if vllm_installed is not None
                                      else importlib.util.find_spec("vllm") is not None):
        problems.append(f"{where(cfg, 'rlhf.use_vllm')}`rlhf.use_vllm` is true but vLLM is not installed: "
                        f"pip install vllm (a GPU machine), or set `rlhf.use_vllm: false` for ms-swift's "
                        f"transformers engine")
    if not answers_with_geometry(cfg.prompts.scheme):
        problems.append(f"{where(cfg, 'prompts.scheme')}`prompts.scheme` = {cfg.prompts.scheme!r}: its answers "
                        f"hold no boxes to reward; stage 3 takes a scheme that answers with geometry "
                        f"({', '.join(n for n in PROMPT_SCHEMES if answers_with_geometry(n))})")
    if cfg.custom.images_per_user_turn != 1:
        problems.append(f"{where(cfg, 'custom.images_per_user_turn')}`custom.images_per_user_turn` = "
                        f"{cfg.custom.images_per_user_turn}: stage 3 rewards one image's answer: set it to 1")
    if cfg.custom.augment_prob > 0:
        problems.append(f"{where(cfg, 'custom.augment_prob')}`custom.augment_prob` = {cfg.custom.augment_prob}: "
                        f"stage 3 does not augment (the ground truth travels with each prompt): set it to 0")
    if cfg.custom.cached_dataset:
        problems.append(f"{where(cfg, 'custom.cached_dataset')}`custom.cached_dataset`: ms-swift's GRPO encodes "
                        f"during rollouts and refuses a cached dataset: remove it")
    return problems
