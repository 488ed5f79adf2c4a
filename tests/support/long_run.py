"""A training run long enough to stop mid-way: what the tests of Ctrl-C, SIGTERM and the run lock start."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[2]


def long_run_config(tmp_path: Path, more_training: str = "") -> Path:
    """A run of 500 steps on the tiny model that saves a checkpoint every 2 steps, into tmp_path/out (CPU config);
    `more_training`: lines added to its `training:` section."""
    model = build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=4)
    config = tmp_path / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: {model}\n"
                      "custom:\n  train_jsonl: data/train.jsonl\n  health_check_samples: 0\n"
                      "training:\n  output_dir: out\n  max_steps: 500\n  save_strategy: steps\n  save_steps: 2\n"
                      "  logging_steps: 1\n  eval_strategy: 'no'\n" + more_training)
    return config


def wait_for_checkpoint_2(job: subprocess.Popen, out: Path) -> None:
    """Return once `out`/checkpoint-2 is whole; fail the test with the job's stderr if the job ended first."""
    marker, deadline = out / "checkpoint-2" / "trainer_state.json", time.monotonic() + 300
    while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if job.poll() is not None:
        pytest.fail(job.stderr.read()[-3000:])
