"""Ctrl-C through scripts/train.sh under torchrun (gpus=cpu nproc=2): the same exit code as one process (130),
where the run stopped in the log, and no process of the job left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]


def _alive(config: Path) -> list[str]:
    """The processes of the job launched with `config` (torchrun's workers run in sessions of their own, so
    the launcher's process group does not hold them)."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if str(config) in line]


def _start_two_process_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """train.sh gpus=cpu nproc=2 on a long run, returned once its checkpoint-2 is whole."""
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
    marker, deadline = out / "checkpoint-2" / "trainer_state.json", time.monotonic() + 300
    while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if job.poll() is not None:
        pytest.fail(job.stderr.read()[-3000:])
    return job, out, config


def _no_process_left(config: Path) -> bool:
    deadline = time.monotonic() + 30
    while _alive(config) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not _alive(config)


def _kill_all(config: Path) -> None:
    for line in _alive(config):
        os.kill(int(line.split()[0]), signal.SIGKILL)


@pytest.mark.slow
def test_ctrl_c_under_torchrun_exits_130_and_leaves_no_process(tmp_path):
    """torchrun ends with 1 on SIGINT (its SignalException): train.sh passed that on, so an interrupted 2-process
    run looked like a failed one."""
    job, out, config = _start_two_process_run(tmp_path)
    try:
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        stdout, stderr = job.communicate(timeout=120)
        ended = _no_process_left(config)
    finally:
        _kill_all(config)  # whatever a failure left
    assert job.returncode == 130, stdout[-2000:] + stderr[-2000:]
    log = next((out / "logs").glob("train-*-rank0.log"))
    assert f"train.sh: interrupted (exit 130); the whole log: {log}" in stderr
    text = log.read_text()
    assert "interrupted (Ctrl-C): last whole checkpoint: " in text
    # Said once, without a traceback per rank (src.sft's main re-raised it through torchrun's `record`); torchrun's
    # own SignalException traceback, when its agent is interrupted first, is not the ranks'.
    assert 'src/sft.py", line' not in text and not re.search(r"\[rank\d\]:\s*KeyboardInterrupt", text), text[-3000:]
    assert ended  # torchrun and both ranks


@pytest.mark.slow
def test_sigterm_to_the_launcher_alone_stops_the_training_and_frees_the_directory(tmp_path):
    """`kill PID` of train.sh (what `timeout`, a supervisor or a CI cancel do) killed the shell only: torchrun and
    its workers trained on, detached, holding the run lock and writing the log."""
    from src.training.run_lock import take_run_lock

    job, out, config = _start_two_process_run(tmp_path)
    try:
        os.kill(job.pid, signal.SIGTERM)  # the launcher's own pid, not its group
        stdout, stderr = job.communicate(timeout=120)
        ended = _no_process_left(config)
    finally:
        _kill_all(config)  # whatever a failure left
    assert job.returncode == 143, stdout[-2000:] + stderr[-2000:]
    log = next((out / "logs").glob("train-*-rank0.log"))
    assert f"train.sh: stopped by SIGTERM (exit 143); the whole log: {log}" in stderr
    assert "stopped by SIGTERM (exit 143)" in log.read_text()
    assert ended
    take_run_lock(out).release()  # the directory is free for the next run
