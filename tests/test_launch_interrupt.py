"""Ctrl-C through scripts/train.sh under torchrun (gpus=cpu nproc=2): the same exit code as one process (130),
where the run stopped in the log, and no process of the job left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]


def _group_alive(pgid: int) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid=,pgid=,args="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if line.split()[1] == str(pgid)]


@pytest.mark.slow
def test_ctrl_c_under_torchrun_exits_130_and_leaves_no_process(tmp_path):
    """torchrun ends with 1 on SIGINT (its SignalException): train.sh passed that on, so an interrupted 2-process
    run looked like a failed one."""
    model = build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=4)
    config = tmp_path / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: {model}\n"
                      "custom:\n  train_jsonl: data/train.jsonl\n  health_check_samples: 0\n"
                      "training:\n  output_dir: out\n  max_steps: 500\n  save_strategy: steps\n  save_steps: 2\n"
                      "  logging_steps: 1\n  eval_strategy: 'no'\n")
    out = tmp_path / "out"
    job = subprocess.Popen(["bash", str(REPO / "scripts" / "train.sh"), f"config={config}", "gpus=cpu", "nproc=2"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # no master_port=: the launcher takes a free one
    try:
        marker, deadline = out / "checkpoint-2" / "trainer_state.json", time.monotonic() + 300
        while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.poll() is None, job.stderr.read()[-3000:]
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130, stdout[-2000:] + stderr[-2000:]
    log = next((out / "logs").glob("train-*-rank0.log"))
    assert f"train.sh: interrupted (exit 130); the whole log: {log}" in stderr
    assert "interrupted (Ctrl-C): last whole checkpoint: " in log.read_text()
    deadline = time.monotonic() + 30
    while _group_alive(job.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _group_alive(job.pid)  # torchrun and both ranks ended
