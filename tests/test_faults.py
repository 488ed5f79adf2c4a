"""Faults end cleanly (issue 21): a full disk and a read-only run directory give one message naming the
directory, the reason and the last whole checkpoint (exit 3, no `inline_container.cc` traceback), and leave
that checkpoint whole.

The full disk is real: a tmpfs of 800 KB mounted on the run directory in a private mount namespace
(`unshare -rm`), so every write of the run (torch.save, safetensors, the logs) meets ENOSPC as it would on
a full disk. The read-only directory is a real read-only bind mount (root ignores chmod, so a chmod'ed
folder would prove nothing here). Where mount namespaces are not allowed the tests skip, saying so.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model
from src.training.checkpoint_guard import checkpoint_problem
from src.training.run_dir import resolve_resume, skipped_notes

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _can_mount(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {probe}"],
                          capture_output=True, text=True)
    return done.returncode == 0


def _in_namespace(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full_disk_run(tmp_path_factory):
    """A run whose directory (a tmpfs of 800 KB: about two checkpoints of the tiny model) fills up while it
    saves; (result, a copy of the directory as the run left it, the config)."""
    root = tmp_path_factory.mktemp("faults")
    if not _can_mount(root):
        pytest.skip("no private mount namespace here (unshare -rm): a full disk cannot be made honestly")
    build_tiny_model(root / "model")
    write_synthetic_dataset(root / "data", n=4)
    out, copy = root / "out", root / "left"
    out.mkdir()
    copy.mkdir()
    config = root / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: {root / 'model'}\n"
                      f"custom:\n  train_jsonl: {root / 'data' / 'train.jsonl'}\n  health_check_samples: 0\n"
                      f"tuner:\n  resume_from_checkpoint: auto\n"
                      f"training:\n  output_dir: {out}\n  max_steps: 8\n  save_strategy: steps\n  save_steps: 1\n"
                      "  logging_steps: 1\n  eval_strategy: 'no'\n")
    train = shlex.join([sys.executable, "-m", "src.sft", "--config", str(config)])
    result = _in_namespace(f"mount -t tmpfs -o size=800k none {out} && {train}; rc=$?; "
                           f"cp -a {out}/. {copy}/; exit $rc")
    return result, copy, config


def test_a_full_disk_ends_with_one_message_and_the_last_whole_checkpoint_intact(full_disk_run):
    result, left, _ = full_disk_run
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    message = result.stderr.strip().splitlines()
    error = next(i for i, line in enumerate(message) if line.startswith("error: cannot write to the run directory"))
    text = "\n".join(message[error:])
    assert "no space is left on its device" in text or "a write failed (torch.save)" in text, text
    assert "MB free there now" in text and "first free space on that device" in text
    assert "Traceback" not in "\n".join(message[error:]) and "enforce fail" not in text
    whole = resolve_resume(left, "auto")
    assert whole is not None and checkpoint_problem(Path(whole)) is None  # still whole: resumable
    step = int(Path(whole).name.split("-")[1])
    assert 1 <= step < 8
    assert f"last whole checkpoint: {left.parent / 'out' / Path(whole).name}" in text
    torn = skipped_notes(left, whole)  # what the disk cut short is named, never resumed from
    assert torn and f"checkpoint-{step + 1} " in torn[0] and f"checkpoint-{step + 1} " in text


def test_a_read_only_run_directory_gives_one_message_and_changes_nothing(full_disk_run, tmp_path):
    _, left, config = full_disk_run
    out = Path(config.read_text().split("output_dir: ")[1].splitlines()[0])
    before = _digests(left)
    train = shlex.join([sys.executable, "-m", "src.sft", "--config", str(config)])
    # The run's own directory path, made a read-only view of what the full disk left.
    result = _in_namespace(f"mount --bind {left} {out} && mount -o remount,bind,ro {out} && {train}")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"cannot write to the run directory {out}: it is on a read-only file system" in result.stderr
    assert f"make {out} writable" in result.stderr
    assert "last whole checkpoint: " in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert _digests(left) == before
