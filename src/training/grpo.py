"""Stage 3: ms-swift's GRPO (`SwiftRLHF`), fed with the project's prompts and rewarded by src/rewards.

The same plumbing as SFT (src/training/pipeline.py): the data plan's samples, the health check, the
checkpoint guard and the grounding metrics at each evaluation. What differs:

- each row is the question only (system and user turns, as at training and inference) plus two columns
  ms-swift hands to every reward function: `solution` (the reference answer) and `grounding_truth` (its
  objects in the answer's coordinate space, from the builder's answer codec: a `src.rewards.GroundTruth` object,
  no text form; its docstring says why ms-swift carries it unchanged);
- the grounding rewards are registered in ms-swift's `orms` table under their config names, so
  `rlhf.reward_funcs` picks them like ms-swift's own and the logs say `rewards/<name>/mean`;
- the completions' log-probabilities are computed chunk by chunk from the LM head's input, never as
  full-vocabulary logits for all completions at once (src/training/completion_logps.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swift import RLHFArguments
from swift.pipelines.train.rlhf import SwiftRLHF
from swift.pipelines.train.sft import SwiftSft
from swift.rewards import ORM, orms

from src.config import ProjectConfig
from src.config.remote_code import apply_remote_code_policy
from src.datasets.builders import BaseBuilder
from src.datasets.contract import Record
from src.datasets.images import model_input
from src.datasets.plan import DataPlan
from src.datasets.rows import GroundingRowsDataset
from src.rewards import REWARDS, GroundTruth, truth_for
from src.training.distributed import Job
from src.training.pipeline import GroundingSft, naming_the_record

TRUTH_COLUMN = "grounding_truth"


def _reward_class(name: str, reward) -> type:
    """An ms-swift ORM calling `reward(completion, truth)` per completion; named `name` (its log key)."""

    def __call__(self, completions: list[str], grounding_truth: list[GroundTruth], **kwargs: Any) -> list[float]:
        return [float(reward(text or "", truth))
                for text, truth in zip(completions, grounding_truth, strict=True)]

    return type(name, (ORM,), {"__call__": __call__, "__doc__": reward.__doc__})


def register_rewards() -> None:
    """Put every grounding reward in ms-swift's `orms` table (idempotent)."""
    for name, reward in REWARDS.items():
        if name not in orms:
            orms[name] = _reward_class(name, reward)


class PromptRows:
    """The GRPO rows of a data plan's samples, built on access: the question (system and user turns, images
    as the model sees them), `solution` and `grounding_truth`."""

    def __init__(self, samples: Sequence[tuple[Sequence[Record], dict[str, str]]], builder: BaseBuilder):
        self.samples = samples
        self.builder = builder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        records, focus = self.samples[index]
        row = self.builder.build(records, **focus)
        return {"messages": row["messages"][:-1], "images": [model_input(image) for image in row["images"]],
                "solution": row["messages"][-1]["content"],
                TRUTH_COLUMN: truth_for(self.builder.focused(records, **focus), self.builder.codec)}


class GroundingGrpo(GroundingSft, SwiftRLHF):
    """`SwiftRLHF` (GRPO) with the project's prompts, rewards, health check, guard and evaluation."""

    def _get_dataset(self):
        plan = self._plan
        self.template.encode = naming_the_record(self.template.encode)
        # The health check reads the reference answers' tokens: it runs on the SFT form of the same samples.
        self._check_health(GroundingRowsDataset(plan.train_samples, plan.builder))
        train = PromptRows(plan.train_samples, plan.builder)
        val = PromptRows(plan.val_samples, plan.builder) if plan.val_samples else None
        return train, val

    def _encode_dataset(self, train_dataset, val_dataset, pre_process=True):
        # GRPO encodes in its rollouts; SFT's post-encoding health check does not apply.
        return SwiftSft._encode_dataset(self, train_dataset, val_dataset, pre_process=pre_process)

    def train(self, trainer):
        # The completions' log-probabilities (policy, old policy, reference) chunk by chunk, never as
        # full-vocabulary logits for all completions at once (src/training/completion_logps.py).
        from src.training.completion_logps import install, off_line

        if self._cfg.custom.completion_logps:
            self.completion_heads, decision = install(trainer)
        else:
            self.completion_heads, decision = {}, off_line("custom.completion_logps: false")
        self._print(decision)
        return super().train(trainer)


def run_grpo(kwargs: dict[str, Any], cfg: ProjectConfig, plan: DataPlan, job: Job) -> dict[str, Any]:
    """Build `RLHFArguments(**kwargs)` and train with GRPO; return ms-swift's result dict."""
    register_rewards()
    apply_remote_code_policy()  # no code from the model directory runs unless the config trusts it
    args = RLHFArguments(**kwargs)
    return GroundingGrpo(args, cfg, plan, [], job).main()
