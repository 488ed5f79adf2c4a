"""The run directory: never overwrite an earlier run, and find the checkpoint to resume from."""

from __future__ import annotations

import re
from pathlib import Path

from src.config import ConfigError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
LAUNCHER_LOG_DIR = "logs"  # scripts/train.sh tees into <output_dir>/logs before the run starts


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints under `output_dir` that finished saving (trainer_state.json written), oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = CHECKPOINT_RE.match(child.name)
        if match and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def resolve_resume(output_dir: Path, resume: str | None) -> str | None:
    """`auto` -> the newest complete checkpoint in `output_dir` (None if there is none); else unchanged."""
    if resume != "auto":
        return resume
    checkpoints = complete_checkpoints(output_dir)
    return str(checkpoints[-1]) if checkpoints else None


def guard_output_dir(output_dir: Path, *, overwrite: bool, resuming: bool) -> None:
    """Refuse to start into a non-empty `output_dir` unless resuming or `run.overwrite: true`."""
    if resuming or overwrite or not output_dir.exists():
        return
    if output_dir.is_dir() and all(p.name == LAUNCHER_LOG_DIR for p in output_dir.iterdir()):
        return
    raise ConfigError(
        f"`training.output_dir` = {output_dir} already holds a run. Choose a new output_dir, resume it "
        f"with `tuner.resume_from_checkpoint: auto`, or set `run.overwrite: true` to write into it anyway."
    )
