"""Stage 3's generation batch against the job's size: what ms-swift's RLHFArguments refuse (a ValueError and its
traceback once the run directory was prepared) is refused with the config's checks, before anything starts.

The verdicts are compared with ms-swift's own `_init_generation_batch_params`, run on the same numbers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from swift.rlhf_trainers.args_mixin import RolloutTrainerArgumentsMixin

from src.config import load_project_config
from src.training.grpo_checks import reinforcement_problems

REPO = Path(__file__).resolve().parents[1]
STAGE3 = str(REPO / "configs" / "stage_3_grpo.yaml")
START = str(Path(__file__).resolve().parent)  # an existing directory stands for the stage-2 checkpoint


def swift_refuses(per_device: int, world: int, accumulation: int, rlhf: dict) -> bool:
    args = SimpleNamespace(num_generations=rlhf.get("num_generations", 8), world_size=world,
                           per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation,
                           generation_batch_size=rlhf.get("generation_batch_size"),
                           steps_per_generation=rlhf.get("steps_per_generation"), eval_strategy="no")
    try:
        RolloutTrainerArgumentsMixin._init_generation_batch_params(args)
    except ValueError:
        return True
    return False


CASES = [  # (per-device batch, processes, gradient accumulation, rlhf, the words of our refusal or None)
    (4, 1, 1, {"generation_batch_size": 6, "num_generations": 2}, "not a whole number of steps of the global batch (4"),
    (8, 2, 1, {"generation_batch_size": 24}, "is not a whole number of steps of the global batch (16 = 2 process(es)"),
    (8, 2, 1, {"generation_batch_size": 32}, None),
    (8, 1, 1, {"generation_batch_size": 16, "steps_per_generation": 3}, "needs generation_batch_size = 8 ("),
    (8, 1, 1, {"generation_batch_size": 24, "steps_per_generation": 3}, None),
    (8, 1, 1, {"steps_per_generation": 0}, "`rlhf.steps_per_generation` = 0: at least 1"),
    (8, 1, 2, {}, None),
]


@pytest.mark.parametrize(("per_device", "world", "accumulation", "rlhf", "refusal"), CASES)
def test_generation_batch_refused_exactly_where_ms_swift_refuses_it(tree, per_device, world, accumulation, rlhf,
                                                                    refusal):
    cfg = load_project_config(tree({"run": {"init_from": START}, "rlhf": rlhf,
                                    "training": {"per_device_train_batch_size": per_device,
                                                 "gradient_accumulation_steps": accumulation}},
                                   extends=[STAGE3, "base.yaml"]).config)
    problems = reinforcement_problems(cfg, world_size=world, vllm_installed=False)
    assert swift_refuses(per_device, world, accumulation, rlhf) == (refusal is not None)
    if refusal is None:
        assert problems == []
    else:
        assert any(refusal in p for p in problems), problems
