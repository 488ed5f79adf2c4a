"""A run killed with SIGKILL and resumed with `resume_from_checkpoint: auto` ends at the same step with
the same data order (the losses of the resumed steps equal those of an uninterrupted run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model
from tests.support.multiprocess import losses_by_step

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 8


def _config(root: Path, name: str, resume: bool) -> Path:
    path = root / f"{name}{'-resume' if resume else ''}.yaml"
    path.write_text(
        f"extends: [{REPO / 'configs' / 'stage_2_llm_lora.yaml'}, {REPO / 'configs' / 'cpu.yaml'}]\n"
        "model:\n  model: ./model\n"
        + ("tuner:\n  resume_from_checkpoint: auto\n" if resume else "")
        + "custom:\n  train_jsonl: data/train.jsonl\n  health_check_samples: 0\n"
        f"training:\n  output_dir: ./{name}\n  max_steps: {MAX_STEPS}\n  save_strategy: steps\n  save_steps: 2\n"
        "  logging_steps: 1\n  eval_strategy: 'no'\n  learning_rate: 1.0e-3\n  train_dataloader_shuffle: true\n")
    return path


def _sft(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "src.sft", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_killed_run_resumes_to_the_same_step_and_data_order(tmp_path):
    build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=10)

    straight = _sft(_config(tmp_path, "straight", resume=False))
    assert straight.wait(timeout=600) == 0, straight.stderr.read()[-3000:]

    killed = _sft(_config(tmp_path, "killed", resume=False))
    marker = tmp_path / "killed" / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / f"checkpoint-{MAX_STEPS}").exists()

    refused = subprocess.run([sys.executable, "-m", "src.sft", "--config", str(_config(tmp_path, "killed", False))],
                             cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "already holds a run" in refused.stderr  # no silent overwrite

    resumed = _sft(_config(tmp_path, "killed", resume=True))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    state = json.loads((tmp_path / "killed" / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    # The resume's config differs (resume_from_checkpoint: auto): the one the first steps trained with is kept.
    (earlier,) = (tmp_path / "killed").glob("resolved_config.*.yaml")
    assert "resume_from_checkpoint: auto" not in earlier.read_text()
    assert "resume_from_checkpoint: auto" in (tmp_path / "killed" / "resolved_config.yaml").read_text()

    expected, got = losses_by_step(tmp_path / "straight"), losses_by_step(tmp_path / "killed")
    resumed_steps = [s for s in range(5, MAX_STEPS + 1)]
    assert [round(got[s], 4) for s in resumed_steps] == [round(expected[s], 4) for s in resumed_steps]
