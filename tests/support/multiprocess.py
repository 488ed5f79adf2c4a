"""Helpers of the multi-process tests: run configs, the launcher, free ports, a node without the shared disk."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN_SH = REPO / "scripts" / "train.sh"
TIMEOUT_S = 600


def free_port() -> int:
    """A TCP port nothing listens on now (torchrun's store binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_run_config(root: Path, name: str, *, workspace: Path, recipe: str = "stage_2_llm_lora.yaml",
                     cpu: bool = True, train_jsonl: Path | None = None, name_suffix: str = "", **sections) -> Path:
    """`<root>/<name><suffix>.yaml`: the recipe (plus configs/cpu.yaml when `cpu`), the workspace's tiny model
    and data, output into `<root>/<name>`, few steps, no evaluation; `sections` update the sections."""
    bases = [str(REPO / "configs" / recipe)] + ([str(REPO / "configs" / "cpu.yaml")] if cpu else [])
    config = {
        "extends": bases,
        "model": {"model": str(workspace / "model")},
        "custom": {"train_jsonl": str(train_jsonl or workspace / "data" / "train.jsonl"), "health_check_samples": 1},
        "training": {"output_dir": str(root / name), "max_steps": 4, "logging_steps": 1, "eval_strategy": "no",
                     "save_strategy": "steps", "save_steps": 2},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = root / f"{name.replace('/', '_')}{name_suffix}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(extra or {})
    return env


def train_sh(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """scripts/train.sh with `args`, stdout and stderr together in `.stdout`."""
    return subprocess.run(["bash", str(TRAIN_SH), *args], cwd=cwd, env=_env(env), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)


def launch(args: list[str], *, cwd: Path, hide: Path | None = None) -> subprocess.Popen:
    """scripts/train.sh in the background, in its own process group (stdout+stderr piped).

    `hide`: run it in a mount namespace where an empty tmpfs covers that directory, as on a node that
    does not share it.
    """
    command = ["bash", str(TRAIN_SH), *args]
    if hide is not None:
        script = 'mount -t tmpfs tmpfs "$0" && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, str(hide), *command]
    return subprocess.Popen(command, cwd=cwd, env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


@functools.lru_cache(maxsize=1)
def mount_namespace_available() -> bool:
    """True when `unshare -m` can mount a tmpfs here (root, unshare present)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def losses_by_step(run: Path) -> dict[int, float]:
    """Training loss per global step from a run's logging.jsonl (read as the loss curves read it)."""
    from src.training.curves import read_loss_rows

    return dict(read_loss_rows(run / "logging.jsonl")[0])
