"""The run directory: the guard, `resume_from_checkpoint: auto` over whole checkpoints only, the run lock,
and the messages for a run that cannot write."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from src.config import ConfigError
from src.training.checkpoint_guard import checkpoint_problem
from src.training.run_dir import (
    complete_checkpoints,
    guard_output_dir,
    resolve_resume,
    resumes_in,
    saved_nothing,
    set_aside_earlier_run,
    set_aside_logging_dir,
    skipped_notes,
    stopped_report,
    write_fault,
)
from src.training.run_lock import LOCK_NAME, release_run_locks, stale_note, take_run_lock


def _checkpoint(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        save_file({"a.lora_A.weight": np.ones((4, 4), dtype=np.float32)}, str(path / "adapter_model.safetensors"))
    return path


def test_auto_resume_picks_the_newest_complete_checkpoint(tmp_path):
    _checkpoint(tmp_path, 5)
    newest = _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 30, complete=False)  # killed while saving
    (tmp_path / "checkpoint-x").mkdir()
    assert complete_checkpoints(tmp_path)[-1] == newest
    assert resolve_resume(tmp_path, "auto") == str(newest)


def test_auto_resume_skips_torn_checkpoints_and_says_which(tmp_path):
    """Issue 21: an empty trainer_state.json (a torn write) was picked, then JSONDecodeError."""
    whole = _checkpoint(tmp_path, 10)
    empty = _checkpoint(tmp_path, 20)
    (empty / "trainer_state.json").write_text("")
    torn_json = _checkpoint(tmp_path, 30)
    (torn_json / "trainer_state.json").write_text('{"global_step": 3')
    no_weights = _checkpoint(tmp_path, 40)
    (no_weights / "adapter_model.safetensors").unlink()
    cut = _checkpoint(tmp_path, 50)
    data = (cut / "adapter_model.safetensors").read_bytes()
    (cut / "adapter_model.safetensors").write_bytes(data[: len(data) - 10])  # a full disk cut the last tensor
    index = _checkpoint(tmp_path, 60)
    (index / "adapter_model.safetensors").unlink()
    (index / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00001.safetensors"}}))
    assert resolve_resume(tmp_path, "auto") == str(whole)
    notes = skipped_notes(tmp_path, str(whole))
    assert [n.split(" (")[0] for n in notes] == [f"resume: skipped {tmp_path / f'checkpoint-{s}'}"
                                                 for s in (20, 30, 40, 50, 60)]
    assert "trainer_state.json is empty (a torn write)" in notes[0]
    assert "not whole JSON" in notes[1] and "no model or adapter weights" in notes[2]
    assert "cut short while written" in notes[3] and "model-00001.safetensors" in notes[4]
    assert checkpoint_problem(whole) is None
    report = stopped_report(tmp_path)
    assert f"last whole checkpoint: {whole}" in report and "resume_from_checkpoint: auto" in report


def test_auto_resume_without_checkpoints_starts_fresh_and_paths_pass_through(tmp_path):
    assert resolve_resume(tmp_path / "missing", "auto") is None
    assert resolve_resume(tmp_path, "/some/ckpt") == "/some/ckpt"
    assert resolve_resume(tmp_path, None) is None


def test_guard_refuses_a_directory_holding_a_run(tmp_path):
    _checkpoint(tmp_path, 2)
    with pytest.raises(ConfigError, match="already holds a run"):
        guard_output_dir(tmp_path, overwrite=False, resuming=False)
    with pytest.raises(ConfigError, match="already holds a run"):  # auto found nothing whole: still a run
        guard_output_dir(tmp_path, overwrite=False, resuming=False, auto=True)
    guard_output_dir(tmp_path, overwrite=True, resuming=False)
    guard_output_dir(tmp_path, overwrite=False, resuming=True)


def test_only_a_checkpoint_of_the_directory_itself_resumes_there(tmp_path):
    here, other = _checkpoint(tmp_path / "run", 2), _checkpoint(tmp_path / "other", 8)
    assert resumes_in(tmp_path / "run", str(here)) and not resumes_in(tmp_path / "run", str(other))
    assert not resumes_in(tmp_path / "run", None)
    # Another run's checkpoint continues that training into this directory: it must not hold a run already
    # (ms-swift would append to its logging.jsonl and save over its checkpoint names).
    with pytest.raises(ConfigError, match="already holds a run"):
        guard_output_dir(tmp_path / "run", overwrite=False, resuming=resumes_in(tmp_path / "run", str(other)))


def test_a_failed_start_is_refused_with_advice_that_works(tmp_path):
    """Issue 21: after a run that failed at start, the refusal said to resume with `auto`, and `auto` gave
    the same refusal. Now `auto` starts it again there (nothing was saved), and says so."""
    for name in ("resolved_config.yaml", "args.json", "skipped_records.jsonl", "swift_plugin_ab12.py"):
        (tmp_path / name).write_text("x")
    (tmp_path / "logs").mkdir()
    with pytest.raises(ConfigError) as refused:
        guard_output_dir(tmp_path, overwrite=False, resuming=False)
    assert "saved no checkpoint" in str(refused.value) and "resume_from_checkpoint: auto" in str(refused.value)
    note = guard_output_dir(tmp_path, overwrite=False, resuming=False, auto=True)
    assert "starts again from step 0" in note
    (tmp_path / "notes.txt").write_text("mine")  # not something a start writes: a run (or the user's)
    with pytest.raises(ConfigError, match="already holds a run"):
        guard_output_dir(tmp_path, overwrite=False, resuming=False, auto=True)


def test_guard_accepts_new_empty_or_launcher_log_only_directories(tmp_path):
    guard_output_dir(tmp_path / "new", overwrite=False, resuming=False)
    guard_output_dir(tmp_path, overwrite=False, resuming=False)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "train.log").write_text("x")
    (tmp_path / LOCK_NAME).write_text("{}")
    guard_output_dir(tmp_path, overwrite=False, resuming=False)


def _files(root):
    return sorted(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_overwrite_sets_the_earlier_run_aside_and_keeps_what_this_run_reads(tmp_path):
    run, tb = tmp_path / "run", tmp_path / "tb" / "run"
    _checkpoint(run, 4)
    (run / "logging.jsonl").write_text('{"loss": 1.0, "global_step/max_steps": "4/4"}\n')
    (run / "logs").mkdir()
    (run / "logs" / "train-now.log").write_text("this launch")
    (run / LOCK_NAME).write_text("{}")
    (run / "data").mkdir()
    (run / "data" / "train.jsonl").write_text("{}")
    (run / "warm").mkdir()
    (run / "loss_curves.png").write_bytes(b"png")
    (run / "notes.txt").write_text("the user's own")  # no run writes it: a careless output_dir, not a run
    tb.mkdir(parents=True)
    (tb / "events.out.tfevents.1.host").write_text("curves")
    before = _files(tmp_path)

    notes = set_aside_earlier_run(run, tb, [run / "data" / "train.jsonl", run / "warm" / "adapter"], "20261207-1")
    # Nothing deleted or rewritten; the earlier run's files where no resume or curve of the new run reads them.
    assert _files(tmp_path) == before
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "data", "logs", "notes.txt", "previous", "warm"]
    aside = run / "previous" / "20261207-1"
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-4", "logging.jsonl", "loss_curves.png"]
    assert resolve_resume(run, "auto") is None
    tb_aside = tmp_path / "tb" / "run.previous-20261207-1"
    assert (tb_aside / "events.out.tfevents.1.host").read_text() == "curves" and not tb.exists()
    assert any("moved to" in n and str(aside) in n for n in notes)
    assert sum("stays in place: this run reads from it" in n for n in notes) == 2
    assert [n for n in notes if "no run writes it" in n] == [f"overwrite: {run / 'notes.txt'} stays in place: "
                                                             "no run writes it"]
    # A second overwrite within the same second: its own folder; the run set aside first is left as it was.
    _checkpoint(run, 2)
    set_aside_earlier_run(run, None, [run / "data"], "20261207-1")
    assert sorted(p.name for p in (run / "previous").iterdir()) == ["20261207-1", "20261207-1-2"]
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-4", "logging.jsonl", "loss_curves.png"]
    assert set_aside_earlier_run(tmp_path / "new", None, [], "x") == []


def test_names_a_user_may_have_chosen_move_only_when_they_hold_what_a_run_writes(tmp_path):
    """A folder given as output_dir may hold the data (`images/` with the records' pictures), the user's own
    `images/`, `runs/` and `README.md`: they stay. ms-swift's plots (`images/train_loss.png`), transformers'
    model card, a TensorBoard folder inside output_dir and event files at its top are the run's: they move."""
    run = tmp_path / "run"
    _checkpoint(run, 2)
    (run / "data_images").mkdir()  # the records' pictures, in a folder of any name
    (run / "data_images" / "train_0001.png").write_bytes(b"png")
    (run / "images").mkdir()  # the user's pictures: not the names of ms-swift's plots
    (run / "images" / "cat.jpg").write_bytes(b"jpg")
    (run / "runs").mkdir()
    (run / "runs" / "other-run.txt").write_text("the user's")
    (run / "README.md").write_text("# My project\n")
    (run / "tb").mkdir()  # training.logging_dir: run/tb
    (run / "tb" / "events.out.tfevents.1.host").write_text("curves")
    (run / "events.out.tfevents.2.host").write_text("curves")  # a logging_dir that was output_dir itself
    holds = lambda entry: entry == run / "data_images"  # noqa: E731 - what setup.py derives from the records

    notes = set_aside_earlier_run(run, run / "tb", [], "s1", holds_inputs=holds)
    (aside,) = (run / "previous").iterdir()
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-2", "events.out.tfevents.2.host", "tb"]
    assert sorted(p.name for p in run.iterdir()) == ["README.md", "data_images", "images", "previous", "runs"]
    assert f"overwrite: {run / 'data_images'} stays in place: this run reads from it" in notes
    assert sum("no run writes it" in n for n in notes) == 3

    # What ms-swift and transformers write under those names does move.
    _checkpoint(run, 4)
    (run / "README.md").rename(tmp_path / "mine.md")
    (run / "README.md").write_text("---\nlibrary_name: peft\n---\n# Model Card\n")
    (run / "images").rename(tmp_path / "my_images")
    (run / "images").mkdir()
    for name in ("train_loss.png", "eval_map.png", "train_data_wait_share.png"):
        (run / "images" / name).write_bytes(b"png")
    set_aside_earlier_run(run, run / "tb", [], "s2", holds_inputs=holds)
    assert sorted(p.name for p in (run / "previous" / "s2").iterdir()) == ["README.md", "checkpoint-4", "images"]


def test_a_fresh_run_sets_aside_curves_left_in_its_tensorboard_folder(tmp_path):
    """The run folder was deleted, its TensorBoard folder (tb/<run>, outside) was not: a new run there would
    have appended its curves to the old ones."""
    run, tb = tmp_path / "run", tmp_path / "tb" / "run"
    tb.mkdir(parents=True)
    (tb / "events.out.tfevents.1.host").write_text("old curves")
    (note,) = set_aside_logging_dir(run, tb, "s1")
    assert not tb.exists() and (tmp_path / "tb" / "run.previous-s1" / "events.out.tfevents.1.host").is_file()
    assert "moved to" in note and "stand alone" in note
    assert set_aside_logging_dir(run, tb, "s2") == []  # nothing there now
    assert set_aside_logging_dir(run, run / "tb", "s3") == []  # inside output_dir: it moves with the run


def test_a_logging_dir_above_the_run_or_holding_other_files_stays_and_one_in_logs_loses_its_events(tmp_path):
    """`logging_dir: runs` with `output_dir: runs/exp1` was renamed whole (the run, its lock and every other
    run with it); a TensorBoard folder inside the launcher's `logs/` (which stays) kept the old curves."""
    runs = tmp_path / "runs"
    (runs / "exp0").mkdir(parents=True)
    (runs / "events.out.tfevents.1.host").write_text("curves")
    (note,) = set_aside_logging_dir(runs / "exp1", runs, "s1")
    assert "holds this run's directory" in note and (runs / "exp0").is_dir()
    mixed = tmp_path / "tb"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("the user's")
    (note,) = set_aside_logging_dir(tmp_path / "run", mixed, "s1")
    assert "not TensorBoard's" in note and (mixed / "notes.txt").is_file()

    run = tmp_path / "run"
    (run / "logs" / "tb").mkdir(parents=True)
    (run / "logs" / "train-now.log").write_text("this launch")
    (run / "logs" / "tb" / "events.out.tfevents.1.host").write_text("old curves")
    notes = set_aside_earlier_run(run, run / "logs" / "tb", [], "s2")
    assert (run / "previous" / "s2" / "logs" / "tb" / "events.out.tfevents.1.host").read_text() == "old curves"
    assert (run / "logs" / "train-now.log").is_file() and not list((run / "logs" / "tb").iterdir())
    assert any("TensorBoard files" in n for n in notes)


def test_a_run_killed_during_its_first_save_starts_again_with_auto(tmp_path):
    """The first checkpoint torn (a kill while saving), nothing whole: the refusal said to set `auto`, and
    `auto` gave the same refusal. Now `auto` starts again (the torn checkpoint is set aside, not deleted)."""
    (tmp_path / "resolved_config.yaml").write_text("x: 1\n")
    (tmp_path / "skipped_records.jsonl.partial").write_text("")
    (tmp_path / "tb").mkdir()  # a logging_dir inside: written at the start too
    torn = _checkpoint(tmp_path, 5)
    (torn / "trainer_state.json").write_text("")
    assert saved_nothing(tmp_path, tmp_path / "tb")
    note = guard_output_dir(tmp_path, overwrite=False, resuming=False, auto=True, logging_dir=tmp_path / "tb")
    assert "starts again from step 0" in note
    _checkpoint(tmp_path, 2)  # something whole: a run to resume, not to start again
    assert not saved_nothing(tmp_path, tmp_path / "tb")


def test_a_second_lock_on_a_directory_is_refused_naming_the_holder(tmp_path):
    lock = take_run_lock(tmp_path / "run")
    try:
        with pytest.raises(ConfigError) as refused:
            take_run_lock(tmp_path / "run")  # another open file: flock refuses it, as for another process
        message = str(refused.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()} since " in message
        assert "in use by another run" in message and "choose another output_dir" in message
    finally:
        release_run_locks()
    assert lock.fd is None
    again = take_run_lock(tmp_path / "run")  # released: free again, and not called stale (it was released)
    assert again.stale is None and stale_note(again) is None
    release_run_locks()


def test_a_lock_file_left_by_a_dead_process_is_stale_and_taken_over(tmp_path):
    code = ("import os, sys; from pathlib import Path; from src.training.run_lock import take_run_lock; "
            "take_run_lock(Path(sys.argv[1])); os._exit(0)")  # ends without releasing: the kernel frees it
    dead = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert dead.returncode == 0, dead.stderr
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    lock = take_run_lock(tmp_path)
    try:
        note = stale_note(lock)
        assert f"pid {holder['pid']} on host" in note and "has ended" in note and "stale, taken over" in note
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        release_run_locks()


def test_a_failed_write_is_one_message_naming_the_directory_and_the_last_checkpoint(tmp_path):
    whole = _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 6, complete=False)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoint-6" / "x"))
        except OSError as err:
            raise RuntimeError("saving failed") from err
    except RuntimeError as err:
        message = write_fault(err, tmp_path)
    assert f"cannot write to the run directory {tmp_path}: no space is left on its device" in message
    assert f"last whole checkpoint: {whole}" in message and "checkpoint-6" in message
    assert "first free space on that device" in message
    torch_style = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    assert "a write failed (torch.save)" in write_fault(torch_style, tmp_path)
    read_only = write_fault(OSError(errno.EROFS, "Read-only file system", str(tmp_path / LOCK_NAME)), None)
    assert f"run directory {tmp_path}: it is on a read-only file system" in read_only
    assert write_fault(ValueError("something else"), tmp_path) is None


@pytest.mark.slow
def test_a_run_with_overwrite_starts_clean_and_the_earlier_run_is_kept_aside(mp_workspace, tmp_path, capsys):
    """Before: `run.overwrite: true` wrote into the earlier run's directory, so ms-swift appended to its
    logging.jsonl (two runs in one loss curve) and `auto` could resume the earlier run's newer checkpoint."""
    from src.sft import main
    from tests.support.multiprocess import losses_by_step, write_run_config

    earlier = write_run_config(tmp_path, "run", workspace=mp_workspace, name_suffix="_earlier",
                               training={"max_steps": 4, "save_steps": 4, "report_to": ["tensorboard"]})
    assert main(["--config", str(earlier)]) == 0
    again = write_run_config(tmp_path, "run", workspace=mp_workspace, name_suffix="_again", run={"overwrite": True},
                             training={"max_steps": 2, "save_steps": 2, "report_to": ["tensorboard"]})
    assert main(["--config", str(again)]) == 0
    assert "moved to" in capsys.readouterr().out

    run = tmp_path / "run"
    (aside,) = (run / "previous").iterdir()
    assert json.loads((aside / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    assert sorted(losses_by_step(aside)) == [1, 2, 3, 4]
    # ms-swift's plots are recognised as the run's own (not a user's folder of pictures).
    assert (aside / "images" / "train_loss.png").is_file()
    assert sorted(losses_by_step(run)) == [1, 2]  # this run's rows only
    assert resolve_resume(run, "auto") == str(run / "checkpoint-2")
    (tb_aside,) = (tmp_path / "tb").glob("run.previous-*")
    assert any(tb_aside.rglob("events.out.tfevents*")) and any((tmp_path / "tb" / "run").rglob("events.out.tfevents*"))

    # A warm start from that adapter that died before its first save (its merge, a logged step and start
    # files there), started again with `auto`: it sets the failed start aside (the export refused an existing
    # init_merged; ms-swift would append to the logged step) and trains from step 0.
    failed = tmp_path / "warm"
    (failed / "init_merged").mkdir(parents=True)
    (failed / "init_merged" / "config.json").write_text("{}")
    (failed / "logging.jsonl").write_text('{"loss": 9.0, "global_step/max_steps": "1/2"}\n')
    (failed / "resolved_config.yaml").write_text("x: 1\n")
    warm = write_run_config(tmp_path, "warm", workspace=mp_workspace, run={"init_from": str(run / "checkpoint-2")},
                            tuner={"resume_from_checkpoint": "auto"}, training={"max_steps": 2, "save_steps": 2})
    assert main(["--config", str(warm)]) == 0
    assert "starts again from step 0" in capsys.readouterr().out
    (failed_aside,) = (failed / "previous").iterdir()
    assert sorted(p.name for p in failed_aside.iterdir()) == ["init_merged", "logging.jsonl", "resolved_config.yaml"]
    assert sorted(losses_by_step(failed)) == [1, 2] and (failed / "init_merged" / "model.safetensors").is_file()
