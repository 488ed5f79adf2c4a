"""Rewards for reinforcement learning on grounding answers (stage 3, GRPO): pure functions of an answer and
its ground truth, in the answer's coordinate space. `src/training/grpo.py` hands them to ms-swift."""

from src.rewards.grounding import REWARDS, GroundTruth, truth_for, truth_from_answer

__all__ = ["REWARDS", "GroundTruth", "truth_for", "truth_from_answer"]
