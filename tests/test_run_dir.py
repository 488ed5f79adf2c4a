"""The run directory guard and `resume_from_checkpoint: auto`."""

from __future__ import annotations

import pytest

from src.config import ConfigError
from src.training.run_dir import complete_checkpoints, guard_output_dir, resolve_resume


def _checkpoint(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_auto_resume_picks_the_newest_complete_checkpoint(tmp_path):
    _checkpoint(tmp_path, 5)
    newest = _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 30, complete=False)  # killed while saving
    (tmp_path / "checkpoint-x").mkdir()
    assert complete_checkpoints(tmp_path)[-1] == newest
    assert resolve_resume(tmp_path, "auto") == str(newest)


def test_auto_resume_without_checkpoints_starts_fresh_and_paths_pass_through(tmp_path):
    assert resolve_resume(tmp_path / "missing", "auto") is None
    assert resolve_resume(tmp_path, "/some/ckpt") == "/some/ckpt"
    assert resolve_resume(tmp_path, None) is None


def test_guard_refuses_a_directory_holding_a_run(tmp_path):
    (tmp_path / "args.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a run"):
        guard_output_dir(tmp_path, overwrite=False, resuming=False)
    guard_output_dir(tmp_path, overwrite=True, resuming=False)
    guard_output_dir(tmp_path, overwrite=False, resuming=True)


def test_guard_accepts_new_empty_or_launcher_log_only_directories(tmp_path):
    guard_output_dir(tmp_path / "new", overwrite=False, resuming=False)
    guard_output_dir(tmp_path, overwrite=False, resuming=False)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "train.log").write_text("x")
    guard_output_dir(tmp_path, overwrite=False, resuming=False)
