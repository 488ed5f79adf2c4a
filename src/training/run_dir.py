"""The run directory: never overwrite an earlier run, and find the checkpoint to resume from."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from src.config import ConfigError
from src.config.atomic import PARTIAL_SUFFIX
from src.training.checkpoint_guard import checkpoint_problem
from src.training.run_lock import LOCK_NAME
from src.training.swift_plugin import PLUGIN_PREFIX

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
LAUNCHER_LOG_DIR = "logs"  # scripts/train.sh tees into <output_dir>/logs before the run starts
PREVIOUS_DIR = "previous"  # `run.overwrite: true` moves an earlier run into <output_dir>/previous/<UTC time>
# What a directory may hold that no run of its own reads or writes: a new run may start beside it.
NOT_A_RUN = frozenset({LAUNCHER_LOG_DIR, LOCK_NAME, PREVIOUS_DIR})
# What a run writes before it trains (src/training/setup.py, ms-swift's start): a directory holding only
# these (and NOT_A_RUN) saw a start that failed before its first save.
START_FILES = ("resolved_config.yaml", "skipped_records.jsonl", "args.json", "logging.jsonl", "val_dataset.jsonl",
               "init_merged")
MERGE_TMP_PREFIX = ".init_adapter-"  # the adapter copy a warm start's merge reads (left behind by a kill)
EVENTS_PREFIX = "events.out.tfevents."  # TensorBoard's files, where `logging_dir` is output_dir itself
# The resolved config a resumed run started with, kept when the resume's config differs (src/training/setup.py).
EARLIER_CONFIG_RE = re.compile(r"^resolved_config\.[0-9-]+\.yaml$")
EVAL_PREDICTIONS = "eval_predictions"  # each evaluation's predictions (src/training/generation_eval.py)
# What a run writes as it trains and after: ms-swift's `last-checkpoint` link, the loss curves, the
# evaluations' predictions, the plugin's bytecode. With START_FILES, the checkpoints, `logging_dir` where it
# is inside output_dir, and the two below: all a run writes.
LATER_FILES = ("last-checkpoint", "loss_curves.png", EVAL_PREDICTIONS, "__pycache__")
# Names a run writes that a user may have chosen too (a data folder of `images`, a project's README): an entry
# of these names is the run's only when it holds what the run writes there.
PLOTS_DIR = "images"  # ms-swift's plots of the TensorBoard curves, one `<train|eval|test>_<tag>.png` per tag
PLOT_RE = re.compile(r"^(train|eval|test)_[^/]*\.png$")
MODEL_CARD = "README.md"  # transformers' model card: YAML front matter (`---`) first


def _is_plots_dir(path: Path) -> bool:
    return path.is_dir() and all(child.is_file() and PLOT_RE.match(child.name) for child in path.iterdir())


def _is_model_card(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        return fh.read(4).rstrip(b"\r\n") == b"---"


def logging_entry(output_dir: Path, logging_dir: Path | str | None) -> str | None:
    """The name of the entry of `output_dir` that is or holds `logging_dir` (the run's TensorBoard folder), or
    None when `logging_dir` lies elsewhere (or is output_dir itself: its event files are then recognised by
    name)."""
    if logging_dir is None:
        return None
    inside, top = Path(logging_dir).resolve(), output_dir.resolve()
    if top not in inside.parents:
        return None
    return inside.relative_to(top).parts[0]


def _start_file(path: Path, logs: str | None = None) -> bool:
    name = path.name
    return (name.removesuffix(PARTIAL_SUFFIX) in START_FILES or name == logs
            or name.startswith((PLUGIN_PREFIX, MERGE_TMP_PREFIX, EVENTS_PREFIX))
            or EARLIER_CONFIG_RE.match(name) is not None)


def _run_output(path: Path, logs: str | None = None) -> bool:
    name = path.name
    return (_start_file(path, logs) or name in LATER_FILES or CHECKPOINT_RE.match(name) is not None
            or (name == PLOTS_DIR and _is_plots_dir(path)) or (name == MODEL_CARD and _is_model_card(path)))


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), child) for child in output_dir.iterdir()
             if (m := CHECKPOINT_RE.match(child.name)) and child.is_dir()]
    return sorted(found)


def scan_checkpoints(output_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(whole checkpoints oldest first, [(incomplete checkpoint, what is wrong)]) under `output_dir`
    (see `checkpoint_problem`: a parsable trainer_state.json and whole weights)."""
    whole, incomplete = [], []
    for _, path in _checkpoints(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            whole.append(path)
        else:
            incomplete.append((path, problem))
    return whole, incomplete


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints under `output_dir` that finished saving (whole state and weights), oldest first."""
    return scan_checkpoints(output_dir)[0]


def resolve_resume(output_dir: Path, resume: str | None) -> str | None:
    """`auto` -> the newest complete checkpoint in `output_dir` (None if there is none); else unchanged."""
    if resume != "auto":
        return resume
    checkpoints = complete_checkpoints(output_dir)
    return str(checkpoints[-1]) if checkpoints else None


def skipped_notes(output_dir: Path, chosen: str | None) -> list[str]:
    """One line per incomplete checkpoint newer than `chosen` (the ones `auto` passed over), saying why."""
    newest = int(CHECKPOINT_RE.match(Path(chosen).name).group(1)) if chosen and CHECKPOINT_RE.match(
        Path(chosen).name) else -1
    return [f"resume: skipped {path} ({problem}); it stays there, unused"
            for path, problem in scan_checkpoints(output_dir)[1]
            if int(CHECKPOINT_RE.match(path.name).group(1)) > newest]


def saved_nothing(output_dir: Path, logging_dir: Path | str | None = None) -> bool:
    """True when `output_dir` holds only what a run writes before it trains (`START_FILES`, its image-budget
    plugin, its TensorBoard folder, the launcher's logs, the run lock) and checkpoints that were never saved
    whole: a run that failed (or was stopped) before its first whole save. Starting it again there loses
    nothing (a torn checkpoint is set aside, not deleted)."""
    logs = logging_entry(output_dir, logging_dir)
    torn = {path.name for path, _ in scan_checkpoints(output_dir)[1]}
    return all(p.name in NOT_A_RUN or p.name in torn or _start_file(p, logs) for p in output_dir.iterdir())


def resumes_in(output_dir: Path, checkpoint: str | None) -> bool:
    """True when `checkpoint` is one of `output_dir`'s own (a resume that continues the run there); a checkpoint
    of another directory continues that run's training into `output_dir`, which must then be free."""
    return bool(checkpoint) and Path(checkpoint).resolve().parent == output_dir.resolve()


def guard_output_dir(output_dir: Path, *, overwrite: bool, resuming: bool, auto: bool = False,
                     logging_dir: Path | str | None = None) -> str | None:
    """Refuse to start into a non-empty `output_dir` unless resuming one of its checkpoints (`resuming`, see
    `resumes_in`) or `run.overwrite: true`.

    With `auto` (`resume_from_checkpoint: auto`) and nothing saved there yet (`saved_nothing`), the run starts
    again from step 0 in that directory (the caller sets the failed start's files aside first,
    `set_aside_earlier_run`): the returned note says so. Otherwise None."""
    if resuming or overwrite or not output_dir.exists():
        return None
    if output_dir.is_dir() and all(p.name in NOT_A_RUN for p in output_dir.iterdir()):
        return None
    if output_dir.is_dir() and saved_nothing(output_dir, logging_dir):
        if auto:
            return (f"resume: {output_dir} holds a run that saved no checkpoint (it stopped before its first "
                    f"save); nothing to resume, so it starts again from step 0 there")
        raise ConfigError(
            f"`training.output_dir` = {output_dir} holds a run that saved no checkpoint (it failed or was stopped "
            f"before its first save). Start it again there with `tuner.resume_from_checkpoint: auto`, choose a "
            f"new output_dir, or set `run.overwrite: true`.")
    raise ConfigError(
        f"`training.output_dir` = {output_dir} already holds a run. Choose a new output_dir, resume it "
        f"with `tuner.resume_from_checkpoint: auto`, or set `run.overwrite: true` to start there anyway (the "
        f"earlier run is moved to {output_dir / PREVIOUS_DIR}/<time>, not deleted)."
    )


def _holds(entry: Path, inputs: list[Path]) -> bool:
    entry = entry.resolve()
    return any(path == entry or entry in path.parents for path in inputs)


def free_name(folder: Path, name: str, suffix: str = "") -> Path:
    """`folder/<name><suffix>`, or `folder/<name>-<n><suffix>` with the first n from 2 that no entry holds."""
    candidate, n = folder / f"{name}{suffix}", 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{name}-{n}{suffix}"
    return candidate


def set_aside_earlier_run(output_dir: Path, logging_dir: Path | None, inputs: list[Path], stamp: str,
                          holds_inputs: Callable[[Path], bool] | None = None) -> list[str]:
    """`run.overwrite: true` without a resume: move an earlier run out of the new run's way, deleting nothing.

    Every entry of `output_dir` a run writes (its checkpoints, `START_FILES`, `LATER_FILES`, the TensorBoard
    folder where `logging_dir` lies inside, ms-swift's plots and model card) is renamed into
    `output_dir/previous/<stamp>/`, so `auto` can never resume the earlier run's checkpoints and ms-swift's
    appended `logging.jsonl` (the loss curves, the best checkpoint) holds this run's rows only. A `logging_dir`
    elsewhere is set aside as `set_aside_logging_dir` says. Stay where they are: `NOT_A_RUN` (the launcher's
    logs, the run lock, runs set aside before), an entry that is or holds one of `inputs` (the model,
    `run.init_from`, a data file or its folder) or for which `holds_inputs` says so (a folder of the records'
    images), and anything no run writes (the user's own files in a folder given as output_dir). Returns one
    line per move and per entry left in place, none when nothing was there."""
    notes = []
    inputs = [Path(p).resolve() for p in inputs]
    logs = logging_entry(output_dir, logging_dir)
    entries = sorted(p for p in output_dir.iterdir() if p.name not in NOT_A_RUN) if output_dir.is_dir() else []
    read = [p for p in entries
            if _holds(p, inputs) or (holds_inputs is not None and p.is_dir() and holds_inputs(p))]
    foreign = [p for p in entries if p not in read and not _run_output(p, logs)]
    moving = [p for p in entries if p not in read and p not in foreign]
    target = free_name(output_dir / PREVIOUS_DIR, stamp)  # made only when something moves there
    if moving:
        target.mkdir(parents=True)
        for entry in moving:
            entry.rename(target / entry.name)
        notes.append(f"overwrite: the earlier run in {output_dir} ({len(moving)} entries) moved to {target}; "
                     f"nothing was deleted")
    notes += [f"overwrite: {p} stays in place: this run reads from it" for p in read]
    notes += [f"overwrite: {p} stays in place: no run writes it" for p in foreign]
    notes += _set_aside_launcher_log_events(output_dir, logging_dir, target)
    return notes + set_aside_logging_dir(output_dir, logging_dir, stamp)


def _only_event_files(folder: Path) -> bool:
    """True when every file under `folder` is a TensorBoard event file."""
    return all(p.name.startswith(EVENTS_PREFIX) for p in folder.rglob("*") if p.is_file())


def set_aside_logging_dir(output_dir: Path, logging_dir: Path | str | None, stamp: str) -> list[str]:
    """A run that does not continue one in `output_dir` never writes its curves beside another run's: a
    `logging_dir` outside `output_dir` that already holds TensorBoard's files (a run whose folder was deleted,
    or an earlier run given the same `training.logging_dir`) is renamed to `<logging_dir>.previous-<stamp>`, its
    own run in TensorBoard. Left alone: a `logging_dir` that is or holds `output_dir` (it would carry the run
    off) and one holding other files than TensorBoard's (said in the note). Returns the notes, none when there
    was nothing there."""
    if logging_dir is None or logging_entry(output_dir, logging_dir) is not None:
        return []
    logging_dir, top = Path(logging_dir), output_dir.resolve()
    if not logging_dir.is_dir() or not any(logging_dir.iterdir()):
        return []
    if logging_dir.resolve() == top or logging_dir.resolve() in top.parents:
        return [f"tensorboard: {logging_dir} holds this run's directory; earlier curves there stay, and this "
                f"run's are written beside them"]
    if not _only_event_files(logging_dir):
        return [f"tensorboard: {logging_dir} holds files that are not TensorBoard's; it stays, and this run's "
                f"curves are written beside them"]
    target = free_name(logging_dir.parent, f"{logging_dir.name}.previous-{stamp}")
    logging_dir.rename(target)
    return [f"tensorboard: {logging_dir} held an earlier run's curves; they moved to {target}, so this run's "
            f"stand alone"]


def _set_aside_launcher_log_events(output_dir: Path, logging_dir: Path | str | None, target: Path) -> list[str]:
    """A `logging_dir` inside the launcher's `logs/` (which stays: it holds this launch's log): its TensorBoard
    event files move to the same place under `target`."""
    if logging_entry(output_dir, logging_dir) != LAUNCHER_LOG_DIR or not Path(logging_dir).is_dir():
        return []
    folder = Path(logging_dir)
    events = [p for p in folder.rglob("*") if p.is_file() and p.name.startswith(EVENTS_PREFIX)]
    logs = (output_dir / LAUNCHER_LOG_DIR).resolve()
    for event in events:
        moved = target / LAUNCHER_LOG_DIR / event.resolve().relative_to(logs)
        moved.parent.mkdir(parents=True, exist_ok=True)
        event.rename(moved)
    return [f"overwrite: the earlier run's TensorBoard files in {folder} ({len(events)}) moved to {target}"] if events \
        else []


def stopped_report(output_dir: Path) -> str:
    """Where a run in `output_dir` stopped and how to continue it: its newest whole checkpoint (incomplete
    ones named) and the setting that resumes from it."""
    whole, incomplete = scan_checkpoints(output_dir)
    torn = "".join(f"\n  incomplete, skipped on resume: {path} ({problem})" for path, problem in incomplete)
    if not whole:
        return (f"no checkpoint of {output_dir} was saved whole yet{torn}\n  to start it again there: set "
                f"`tuner.resume_from_checkpoint: auto` and run the same command")
    return (f"last whole checkpoint: {whole[-1]}{torn}\n  to continue from it: set "
            f"`tuner.resume_from_checkpoint: auto` and run the same command")


_WRITE_ERRNOS = {"ENOSPC": "no space is left on its device", "EDQUOT": "the disk quota is exceeded",
                 "EROFS": "it is on a read-only file system", "EACCES": "permission to write there is denied",
                 "EPERM": "permission to write there is denied", "EFBIG": "a file grew past the size allowed"}
_OS_WORDS = {"ENOSPC": "No space left on device", "EDQUOT": "Disk quota exceeded", "EROFS": "Read-only file system"}
# torch.save reports a failed write as this RuntimeError, without the errno (PyTorch's inline_container.cc).
_TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "inline_container.cc", "file write failed")


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def write_fault(err: BaseException, output_dir: Path | None) -> str | None:
    """A one-paragraph message when `err` (or what caused it) is a failure to write the run's files: a full
    disk, a quota, a read-only or unwritable `output_dir`; None for any other error. It says what the disk
    says now, the last whole checkpoint and how to continue."""
    import errno
    import shutil

    reason, where = None, output_dir
    for link in _chain(err):
        if isinstance(link, OSError) and link.errno is not None:
            name = errno.errorcode.get(link.errno, "")
            if name in _WRITE_ERRNOS:
                reason = _WRITE_ERRNOS[name]
                if output_dir is None and link.filename:
                    where = Path(link.filename)
                    where = where if where.is_dir() else where.parent  # the folder written into
                break
        if isinstance(link, RuntimeError) and any(s in str(link) for s in _TORCH_WRITE_FAILURES):
            reason = "a write failed (torch.save)"
            break
        # Libraries outside Python's OSError (safetensors' Rust writer) carry the OS's words only.
        said = next((name for name, words in _OS_WORDS.items() if words in str(link)), None)
        if said:
            reason = _WRITE_ERRNOS[said]
            break
    if reason is None:
        return None
    if where is None:
        return f"cannot write the run's files: {reason} ({err})."
    probe = where if where.exists() else where.parent
    try:
        free = f"{shutil.disk_usage(probe).free / (1 << 20):.1f} MB free there now"
    except OSError:
        free = "free space unknown"
    unwritable = reason.startswith(("it is on a read-only", "permission"))
    if reason.startswith("a write failed"):
        reason += f"; {free} (a full disk gives this)"
    elif not unwritable:
        reason += f" ({free})"
    fix = (f"make {where} writable" if unwritable else "first free space on that device")
    return (f"cannot write to the run directory {where}: {reason}. Nothing more was saved; "
            f"{stopped_report(where) if where.is_dir() else 'no checkpoint there'}\n"
            f"  {fix} (or choose another `training.output_dir`)")
