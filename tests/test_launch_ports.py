"""torchrun's master port on one machine: two jobs at once (gpus=0,1 and gpus=2,3 on one box, or two CPU smoke
tests) both used 29500, and the second died with a torch traceback (EADDRINUSE). One node without master_port=
takes a free port; a port given that is busy is refused with exit 2 on node 0 (node 1 only connects to it)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN_SH = REPO / "scripts" / "train.sh"


def _run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run(["bash", str(TRAIN_SH), *args, "print_only=true"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\n")
    return path


@pytest.fixture
def busy_port():
    """A port some other job listens on, as torchrun's node 0 would."""
    server = socket.socket()
    server.bind(("", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def _port(stdout: str) -> int:
    return int(re.search(r"--master_port=(\d+)", stdout).group(1))


@pytest.mark.parametrize("gpus", [["gpus=cpu", "nproc=2"], ["gpus=0,1"]])
def test_one_node_without_master_port_takes_a_free_port(config, tmp_path, gpus):
    held = socket.socket()
    try:
        held.bind(("", 29500))  # the port every job used: busy, as under a first job
        held.listen()
    except OSError:
        pass  # busy already (another job on this machine): the same situation
    try:
        first, second = _run([f"config={config}", *gpus], tmp_path), _run([f"config={config}", *gpus], tmp_path)
    finally:
        held.close()
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    for proc in (first, second):
        port = _port(proc.stdout)
        assert port != 29500 and f"MASTER_PORT={port} " in proc.stdout
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("", port))  # free: torchrun's node 0 can listen on it
        probe.close()


@pytest.mark.parametrize("nodes", [["nnodes=1"], ["nnodes=2", "node_rank=0", "master_addr=10.0.0.5"]])
def test_a_busy_master_port_on_node_0_is_refused(config, tmp_path, busy_port, nodes):
    proc = _run([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={busy_port}", *nodes], tmp_path)
    assert proc.returncode == 2
    assert f"train.sh: master_port {busy_port} is in use on this machine" in proc.stderr
    assert "command:" not in proc.stdout


def test_a_given_port_is_kept_and_other_nodes_only_connect_to_it(config, tmp_path, busy_port):
    proc = _run([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={busy_port}", "nnodes=2", "node_rank=1",
                 "master_addr=10.0.0.5"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _port(proc.stdout) == busy_port  # node 0 (elsewhere) listens on it: busy here means nothing


def test_one_process_needs_no_port(config, tmp_path, busy_port):
    proc = _run([f"config={config}", "gpus=cpu", f"master_port={busy_port}"], tmp_path)
    assert proc.returncode == 0 and "torch.distributed.run" not in proc.stdout, proc.stderr
