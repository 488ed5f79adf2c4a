"""Ctrl-C and SIGTERM: through scripts/train.sh under torchrun (gpus=cpu nproc=2) the same exit codes as one
process (130, 143), where the run stopped in the log, and no process of the job left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.long_run import long_run_config, wait_for_checkpoint_2

REPO = Path(__file__).resolve().parents[1]


def _alive(config: Path) -> list[str]:
    """The processes of the job launched with `config` (torchrun's workers run in sessions of their own, so
    the launcher's process group does not hold them)."""
    # -ww: whole command lines (without it ps may cut them at the terminal's width, and find no process).
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if str(config) in line]


def _start_two_process_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """train.sh gpus=cpu nproc=2 on a long run, returned once its checkpoint-2 is whole."""
    config = long_run_config(tmp_path)
    out = tmp_path / "out"
    job = subprocess.Popen(["bash", str(REPO / "scripts" / "train.sh"), f"config={config}", "gpus=cpu", "nproc=2"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # no master_port=: the launcher takes a free one
    wait_for_checkpoint_2(job, out)
    return job, out, config


def _no_process_left(config: Path) -> bool:
    deadline = time.monotonic() + 30
    while _alive(config) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not _alive(config)


def _kill_all(config: Path) -> None:
    for line in _alive(config):
        os.kill(int(line.split()[0]), signal.SIGKILL)


def _stop_two_process_run(tmp_path: Path, stop) -> tuple[int, Path, str, str, bool]:
    """Start `_start_two_process_run`, `stop(job)` it, and return (exit code, out, stdout, stderr, whether no
    process of the job is left); whatever a failure left is killed."""
    job, out, config = _start_two_process_run(tmp_path)
    try:
        stop(job)
        stdout, stderr = job.communicate(timeout=120)
        ended = _no_process_left(config)
    finally:
        _kill_all(config)
    return job.returncode, out, stdout, stderr, ended


@pytest.mark.slow
def test_ctrl_c_under_torchrun_exits_130_and_leaves_no_process(tmp_path):
    """torchrun ends with 1 on SIGINT (its SignalException): train.sh passed that on, so an interrupted 2-process
    run looked like a failed one."""
    # What Ctrl-C in a terminal does: SIGINT to the whole foreground group.
    code, out, stdout, stderr, ended = _stop_two_process_run(tmp_path, lambda job: os.killpg(job.pid, signal.SIGINT))
    assert code == 130, stdout[-2000:] + stderr[-2000:]
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

    # The launcher's own pid, not its group.
    code, out, stdout, stderr, ended = _stop_two_process_run(tmp_path, lambda job: os.kill(job.pid, signal.SIGTERM))
    assert code == 143, stdout[-2000:] + stderr[-2000:]
    log = next((out / "logs").glob("train-*-rank0.log"))
    assert f"train.sh: stopped by SIGTERM (exit 143); the whole log: {log}" in stderr
    text = log.read_text()
    assert "stopped by SIGTERM (exit 143)" in text
    # torchrun passes the SIGTERM on to each rank: rank 0 says where the run stopped, once, and no rank dies of it
    # with a traceback (torchrun's own SignalException, its agent's, is not a rank's).
    assert text.count("stopped by SIGTERM: last whole checkpoint: ") == 1, text[-3000:]
    assert 'src/sft.py", line' not in text and not re.search(r"\[rank\d\]:\s*Traceback", text), text[-3000:]
    assert ended
    take_run_lock(out).release()  # the directory is free for the next run


@pytest.mark.slow
def test_sigterm_to_one_process_says_where_the_run_stopped_and_exits_143(tmp_path):
    """SIGTERM (a scheduler's stop, `timeout`, `kill`) ended `python -m src.sft` at once, by the signal: no word
    of the last checkpoint, and the run lock's file kept the dead holder's details."""
    config = long_run_config(tmp_path)
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-m", "src.sft", "--config", str(config), "--device", "cpu"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_checkpoint_2(job, out)
        os.kill(job.pid, signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 143, stdout[-2000:] + stderr[-2000:]
    report = re.search(r"stopped by SIGTERM: last whole checkpoint: (\S+)\n.*resume_from_checkpoint: auto", stderr)
    assert report, stderr[-3000:]
    assert (Path(report[1]) / "trainer_state.json").is_file() and Path(report[1]).parent == out.resolve()
    assert stderr.count("stopped by SIGTERM") == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert (out / ".run.lock").read_text() == ""  # released by main's `finally`, not left to the kernel


@pytest.mark.slow
def test_sigterm_to_every_process_of_a_torchrun_job_stops_it_without_a_traceback(tmp_path):
    """A scheduler's stop (SLURM's scancel, a container's) signals every process of the job, the ranks' DataLoader
    workers too: a worker ended by it failed its rank with 'DataLoader worker (pid N) is killed by signal:
    Terminated.' and a traceback, in place of where the run stopped."""
    # Not --device cpu, which sets configs/cpu.yaml's 0 workers on top: the config extends it and keeps 1 worker.
    config = long_run_config(tmp_path, "  dataloader_num_workers: 1\n")
    out = tmp_path / "out"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "src.sft", "--config", str(config)], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_checkpoint_2(job, out)
        deadline = time.monotonic() + 60  # torchrun, 2 ranks and a DataLoader worker each (same command line)
        while len(_alive(config)) < 5 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        processes = _alive(config)
        assert len(processes) >= 5, processes
        for line in processes:
            os.kill(int(line.split()[0]), signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=120)
        ended = _no_process_left(config)
    finally:
        _kill_all(config)  # whatever a failure left
    text = stdout + stderr
    assert text.count("stopped by SIGTERM: last whole checkpoint: ") == 1, text[-3000:]  # rank 0's, once
    # No rank fails: no traceback through src.sft, no worker's end taken for a failure (even in the iterator's
    # __del__). A worker's own thread may still print a BrokenPipeError when its rank leaves mid-batch (torch's).
    assert 'src/sft.py", line' not in text and "is killed by signal" not in text, text[-3000:]
    assert ended
    assert (out / ".run.lock").read_text() == ""
