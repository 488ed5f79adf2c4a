"""scripts/train.sh: argument handling, the command it builds, exit codes and its log.

GPUs are not available here, so GPU launches are checked with `print_only=true` (the decision and the
exact command); CPU launches really run, one process here and several in tests/test_multiprocess.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model
from tests.support.long_run import long_run_config, wait_for_checkpoint_2

REPO = Path(__file__).resolve().parents[1]
TRAIN_SH = REPO / "scripts" / "train.sh"


def _run(args, cwd, visible=None):
    """train.sh with `args`; `visible`: the CUDA_VISIBLE_DEVICES it inherits (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return subprocess.run(["bash", str(TRAIN_SH), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\n")
    return path


def _command_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("command:"))


def test_one_gpu_runs_one_process_with_that_gpu_visible(config, tmp_path):
    proc = _run(["config=run.yaml", "gpus=3", "print_only=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    command = _command_line(proc.stdout)
    assert "CUDA_VISIBLE_DEVICES=3" in command and "torch.distributed.run" not in command
    assert f"-m src.sft --config {config}" in command  # relative path made absolute from the caller's cwd


def test_several_gpus_use_torchrun_across_them(config, tmp_path):
    proc = _run([f"config={config}", "gpus=0,1,2,3", "print_only=true", "debug=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    command = _command_line(proc.stdout)
    assert "torch.distributed.run --nproc_per_node=4 --nnodes=1 --node_rank=0" in command
    assert "CUDA_VISIBLE_DEVICES=0\\,1\\,2\\,3" in command
    assert command.rstrip().endswith(f"-m src.sft --config {config} --debug")


def test_multi_node_passes_rank_and_master(config, tmp_path):
    proc = _run([f"config={config}", "gpus=0,1", "nnodes=2", "node_rank=1", "master_addr=10.0.0.5",
                 "master_port=29600", "print_only=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    command = _command_line(proc.stdout)
    assert "--nnodes=2 --node_rank=1 --master_addr=10.0.0.5 --master_port=29600" in command
    assert "master:      10.0.0.5:29600\n" in proc.stdout


@pytest.mark.parametrize("node_rank", ["0", "1"])
@pytest.mark.parametrize("mode", ["print_only=true", "dry_run=true", None])
def test_several_nodes_without_master_addr_are_refused_before_anything_starts(config, tmp_path, node_rank, mode):
    """Without master_addr= each node took the default 127.0.0.1, itself, and waited there for the others, saying
    nothing, until torchrun's rendezvous timeout (minutes)."""
    proc = _run([f"config={config}", "gpus=cpu", "nproc=1", "nnodes=2", f"node_rank={node_rank}",
                 *([mode] if mode else [])], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "train.sh: master_addr is required with nnodes=2" in proc.stderr
    allowed = "the address of the node with node_rank=0, reachable from every node and the same on every node"
    assert allowed in proc.stderr
    assert "command:" not in proc.stdout and not list(tmp_path.rglob("logs"))  # nothing started, no log


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.1.1", "localhost", "::1"])
def test_a_loopback_master_addr_says_every_node_must_run_here(config, tmp_path, addr):
    """Allowed (two launchers on one machine form a 2-node job: tests/test_multiprocess.py), and said: from
    another machine a loopback address is that machine itself."""
    proc = _run([f"config={config}", "gpus=0", "nnodes=2", "node_rank=1", f"master_addr={addr}", "master_port=29600",
                 "print_only=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"master:      {addr}:29600 (a loopback address: every node must run on this machine)" in proc.stdout


def test_cpu_hides_gpus_and_passes_base_config_and_dry_run(config, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("{}\n")
    proc = _run([f"config={config}", "gpus=cpu", "base_config=base.yaml", "dry_run=true", "print_only=true"],
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    command = _command_line(proc.stdout)
    assert "CUDA_VISIBLE_DEVICES= " in command and "torch.distributed.run" not in command
    assert f"--base_config {base} --dry-run --device cpu" in command


def test_cpu_with_nproc_runs_torchrun_with_that_many_cpu_processes(config, tmp_path):
    proc = _run([f"config={config}", "gpus=cpu", "nproc=3", "nnodes=2", "node_rank=1", "master_addr=10.0.0.5",
                 "master_port=29611", "print_only=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    command = _command_line(proc.stdout)
    assert "CUDA_VISIBLE_DEVICES= " in command
    assert "torch.distributed.run --nproc_per_node=3 --nnodes=2 --node_rank=1" in command
    assert command.rstrip().endswith("--device cpu")


@pytest.mark.parametrize(("args", "message"), [
    (["gpus=0"], "config=PATH is required"),
    (["config=run.yaml"], "gpus=0,1 (or gpus=cpu) is required"),
    (["config=missing.yaml", "gpus=0"], "config file not found"),
    (["config=run.yaml", "gpus=zero"], "gpus must be 'cpu' or a list"),
    (["config=run.yaml", "gpus=0", "debug=yes"], "debug must be true or false"),
    (["config=run.yaml", "gpus=0", "nnodes=two"], "nnodes must be a whole number"),
    (["config=run.yaml", "gpus=0", "nnodes=2", "node_rank=2"], "node_rank (2) must be below nnodes (2)"),
    (["config=run.yaml", "gpus=0", "nnodes=0"], "nnodes must be at least 1, got '0'"),
    (["config=run.yaml", "gpus=0", "node_rank=3"], "node_rank (3) must be below nnodes (1)"),
    (["config=run.yaml", "gpus=0", "master_port=99999"], "master_port must be a TCP port from 1 to 65535"),
    (["config=run.yaml", "gpus=0", "master_port=0"], "master_port must be a TCP port from 1 to 65535"),
    (["config=run.yaml", "gpus=0", "master_addr="], "master_addr must not be empty"),
    (["config=run.yaml", "gpus=0,0"], "gpus lists GPU 0 twice"),
    (["config=run.yaml", "gpus=1,2,01"], "gpus lists GPU 1 twice"),
    (["config=run.yaml", "gpus=0", "colour=blue"], "unknown argument 'colour=blue'"),
    (["config=run.yaml", "gpus=0,1", "nproc=4"], "nproc=4 is for gpus=cpu; with gpus=0,1 the number of GPUs listed"),
    (["config=run.yaml", "gpus=cpu", "nproc=two"], "nproc must be a whole number"),
    (["config=run.yaml", "gpus=cpu", "nproc=0"], "nproc must be at least 1"),
])
def test_bad_arguments_exit_2_with_a_message(config, tmp_path, args, message):
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.parametrize(("visible", "gpus", "refused"), [
    ("2,3", "0,1", "gpus=0,1 names GPU 0, which CUDA_VISIBLE_DEVICES=2,3 in the environment"),
    ("2,3", "3,1", "gpus=3,1 names GPU 1, which CUDA_VISIBLE_DEVICES=2,3"),
    ("2,3", "3", None),
    ("0,1,2", "02,1", None),
    ("", "5", None),  # nothing inherited: any id
    ("GPU-8f6e2b1c,GPU-1a2b", "0", None),  # UUIDs: not comparable with ids, left to the user
])
def test_gpus_outside_an_inherited_cuda_visible_devices_are_refused(config, tmp_path, visible, gpus, refused):
    """A scheduler's CUDA_VISIBLE_DEVICES=2,3 with gpus=0,1 ran the job on GPUs 0 and 1: another job's."""
    proc = _run([f"config={config}", f"gpus={gpus}", "print_only=true"], cwd=tmp_path, visible=visible)
    if refused:
        assert proc.returncode == 2 and refused in proc.stderr, proc.stderr
        assert "command:" not in proc.stdout
    else:
        assert proc.returncode == 0, proc.stderr
        assert f"CUDA_VISIBLE_DEVICES={gpus.replace(',', chr(92) + ',')} " in _command_line(proc.stdout)


def test_cpu_run_propagates_the_exit_code_and_tees_the_log(tmp_path):
    model = build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "args.json").write_text("{}")  # an earlier run: training must refuse to start
    config = tmp_path / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: {model}\n"
                      "custom:\n  train_jsonl: data/train.jsonl\ntraining:\n  output_dir: out\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _run([f"config={config}", "gpus=cpu"], cwd=elsewhere)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    logs = list((out / "logs").glob("train-*-rank0.log"))
    assert len(logs) == 1
    assert "holds a run that saved no checkpoint" in logs[0].read_text()  # args.json only: a failed start


def test_dry_run_through_the_launcher_succeeds(tmp_path):
    model = build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=4)
    config = tmp_path / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: {model}\n"
                      "custom:\n  train_jsonl: data/train.jsonl\ntraining:\n  output_dir: out\n")
    proc = _run([f"config={config}", "gpus=cpu", "dry_run=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run: config and data are valid" in proc.stdout
    assert not (tmp_path / "out").exists() or not any(p.name != "logs" for p in (tmp_path / "out").iterdir())


@pytest.mark.slow
def test_a_second_run_into_a_busy_directory_is_refused_and_ctrl_c_says_where_the_run_stopped(tmp_path):
    """Issue 21: two runs into one output_dir both trained (logging.jsonl had every entry twice, one log lost);
    Ctrl-C through train.sh lost the final message (tee died of the same SIGINT)."""
    import json
    import os
    import signal

    config = long_run_config(tmp_path)
    out = tmp_path / "out"
    first = subprocess.Popen(["bash", str(TRAIN_SH), f"config={config}", "gpus=cpu"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_checkpoint_2(first, out)
        holder = json.loads((out / ".run.lock").read_text())

        second = _run([f"config={config}", "gpus=cpu"], cwd=tmp_path)
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"is in use by another run: pid {holder['pid']} on host {holder['host']} since" in second.stdout
        assert "choose another output_dir" in second.stdout
        assert first.poll() is None  # the first run goes on

        os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 130, stdout[-2000:] + stderr[-2000:]
    logs = sorted((out / "logs").glob("train-*-rank0.log"))
    assert len(logs) == 2  # one per launch, neither overwritten
    first_log = next(log for log in logs if "interrupted" in log.read_text())
    text = first_log.read_text()
    assert "interrupted (Ctrl-C): last whole checkpoint: " in text and "resume_from_checkpoint: auto" in text
    assert f"train.sh: interrupted (exit 130); the whole log: {first_log}" in stderr
    assert "interrupted (Ctrl-C): last whole checkpoint" in stdout  # tee lived to pass it on
    from src.training.curves import _step

    rows = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines() if line.strip()]
    steps = [_step(row) for row in rows if "loss" in row]
    assert steps and len(steps) == len(set(steps))  # every entry once: the second run wrote nothing
    assert (out / ".run.lock").read_text() == ""  # released


def test_the_training_keeps_the_launchers_input(tmp_path):
    """The training runs in the background of the launcher (so SIGTERM can be passed on to it), where bash
    would give it /dev/null as input: a breakpoint() in a one-process run had no terminal to read."""
    model = build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=2)
    config = tmp_path / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: {model}\n"
                      "custom:\n  train_jsonl: data/train.jsonl\ntraining:\n  output_dir: out\n")
    python = tmp_path / "python"  # the venv's python, reading one line first when it is the training
    python.write_text(f'#!/bin/bash\n[ "$2" = src.sft ] && {{ read -r line; echo "training read: $line"; }}\n'
                      f'exec {REPO / ".venv" / "bin" / "python"} "$@"\n')
    python.chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}, "PYTHON": str(python)}
    proc = subprocess.run(["bash", str(TRAIN_SH), f"config={config}", "gpus=cpu", "dry_run=true"], cwd=tmp_path,
                          input="typed at the terminal\n", capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training read: typed at the terminal" in proc.stdout
