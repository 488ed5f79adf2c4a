"""Running a command the way the offline tests need: no network namespace, and every connect refused."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUARD_DIR = Path(__file__).resolve().parent / "no_network"


@functools.lru_cache(maxsize=1)
def unshare_available() -> bool:
    """True when `unshare -n` can start a process without any network interface here."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def offline_run(argv: list[str], *, cwd: Path, log: Path, timeout: int = 600,
                extra_env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run `argv` with the connect guard on PYTHONPATH (attempts logged to `log`), inside
    `unshare -n` where available. The caller's environment carries no hub-offline variables, so
    the project must set them itself. `unset` names variables the command must not inherit."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_", "MODELSCOPE")) and k not in unset}
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), str(REPO)])
    env["NO_NETWORK_LOG"] = str(log)
    env.update(extra_env or {})
    prefix = ["unshare", "-n"] if unshare_available() else []
    return subprocess.run(prefix + argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
