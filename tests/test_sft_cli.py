"""`python -m src.sft`: the dry run, and every bad input refused with exit code 2 before anything starts.

Each run goes through a small wrapper that runs the module like `python -m` and then reports whether
torch was imported, so "nothing started" is checked, not assumed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.config import ConfigError
from src.training.run_dir import guard_output_dir, resolve_resume
from tests.config_helpers import REPO, write_yaml

WRAPPER = """\
import os, runpy, sys
sys.argv = ["python -m src.sft", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("src.sft", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("TORCH_IMPORTED=" + str("torch" in sys.modules))
print("ENV_IMAGE_MAX_TOKEN_NUM=" + str(os.environ.get("IMAGE_MAX_TOKEN_NUM")))
sys.exit(code)
"""
HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "IMAGE_MAX_TOKEN_NUM"}


def run_sft(*args: str | Path, dry_run: bool = True) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", WRAPPER, *map(str, args), *(["--dry-run"] if dry_run else [])]
    # A bad input must fail in well under a second; the timeout only stops a run that started training.
    return subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


def torch_imported(proc: subprocess.CompletedProcess) -> bool:
    flags = [ln for ln in proc.stdout.splitlines() if ln.startswith("TORCH_IMPORTED=")]
    assert flags, proc.stdout + proc.stderr
    return flags[-1] == "TORCH_IMPORTED=True"


# ---------------------------------------------------------------------------- dry run


def test_dry_run_validates_prints_and_starts_nothing(tree):
    t = tree("training:\n  seed: 7\n")
    proc = run_sft("--config", t.config)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    heads = ["== resolved config", "== ms-swift SftArguments", "== data", "dry run: config and data are valid"]
    positions = [out.find(h) for h in heads]
    assert -1 not in positions and positions == sorted(positions), out
    # resolved values with their origins
    assert f"# {t.config}:3" in next(ln for ln in out.splitlines() if ln.startswith("training.seed = 7"))
    assert f'custom.train_jsonl = "{t.train_jsonl}"' in out
    # ms-swift arguments
    assert "tuner_type = 'lora'" in out
    assert f"output_dir = '{t.output_dir}'" in out
    assert f"dataset = ['{t.train_jsonl}']" in out
    # every record read
    assert f"{t.train_jsonl}: 5 records kept, 0 skipped" in out
    assert f"{t.val_jsonl}: 1 records kept, 0 skipped" in out
    assert "samples: 5 train, 1 val" in out
    assert not torch_imported(proc)
    assert "ENV_IMAGE_MAX_TOKEN_NUM=64" in out  # env from configs/cpu.yaml applied
    assert not t.output_dir.exists()
    assert "Traceback" not in proc.stderr


def test_plain_module_dry_run_and_underscore_alias(tree):
    t = tree()
    for flag in ("--dry-run", "--dry_run"):
        proc = subprocess.run([sys.executable, "-m", "src.sft", "--config", str(t.config), flag], cwd=REPO,
                              env=_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "dry run: config and data are valid; nothing started" in proc.stdout
    assert not t.output_dir.exists()


def test_dry_run_with_base_config_and_debug(tree, tmp_path):
    t = tree()
    site = write_yaml(tmp_path / "site" / "site.yaml", "training:\n  warmup_ratio: 0.05\n  seed: 1\n")
    proc = run_sft("--config", t.config, "--base_config", site, "--debug")
    assert proc.returncode == 0, proc.stderr
    assert "warmup_ratio = 0.05" in proc.stdout
    assert "seed = 42" in proc.stdout  # the chain (base.yaml) wins over --base_config
    assert f"# {site.resolve()}:2" in proc.stdout
    assert "== first training row" in proc.stdout


def test_main_in_process_gives_back_the_sigterm_handler_it_found(tree):
    """main turns SIGTERM into a report and exit 143 while it runs (tests/test_launch_interrupt.py); a caller that
    runs it in process keeps its own SIGTERM handling afterwards."""
    import signal

    from src.sft import main

    def callers_handler(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, callers_handler)
    try:
        assert main(["--config", str(tree().config), "--dry-run"]) == 0
        assert signal.getsignal(signal.SIGTERM) is callers_handler
    finally:
        signal.signal(signal.SIGTERM, before)


# ---------------------------------------------------------------------------- bad input


BAD_INPUTS = [
    pytest.param("training:\n  lerning_rate: 0.1\n", "unknown key `training.lerning_rate`", {}, "base.yaml",
                 id="unknown-key"),
    pytest.param("tuner:\n  trian_type: full\n", "did you mean `train_type`", {}, "base.yaml", id="trian-type"),
    pytest.param("training:\n  num_train_epochs: three\n", "= 'three' has the wrong type: expected float", {},
                 "base.yaml", id="wrong-type"),
    pytest.param("", "extends: file not found: nope.yaml", {}, "nope.yaml", id="extends-missing"),
    pytest.param("", "extends cycle: ", {"x.yaml": "extends: run.yaml\n"}, "x.yaml", id="extends-cycle"),
    pytest.param("training:\n  output_dir: null\n", "`training.output_dir` is required", {}, "base.yaml",
                 id="required-output-dir"),
    pytest.param("training:\n  seed: [1\n", "run.yaml:4:1: invalid YAML", {}, "base.yaml", id="invalid-yaml"),
    pytest.param("model:\n  model: nope\n", "path does not exist", {}, "base.yaml", id="path-missing"),
    pytest.param("custom:\n  emit_norm: norm10\n", "'none', 'norm100', 'norm1000'", {}, "base.yaml",
                 id="emit-norm"),
    pytest.param("training:\n  packing: true\nmodel:\n  attn_impl: flash_attn\n", "set `training.packing: false`",
                 {}, "base.yaml", id="packing",
                 marks=pytest.mark.skipif(HAS_FLASH_ATTN, reason="flash_attn is installed here")),
    pytest.param("training:\n  check_model: true\n", "`check_model` must be false", {}, "base.yaml",
                 id="check-model"),
    pytest.param("training:\n  strict: false\n", "`strict` must be true", {}, "base.yaml", id="strict-false"),
    pytest.param("custom:\n  emit_norm: none\ndata:\n  emit_norm: norm100\n",
                 "`data.emit_norm` and `custom.emit_norm` set the same value", {}, "base.yaml",
                 id="data-alias-conflict"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry", "real"])
@pytest.mark.parametrize(("body", "fragment", "files", "extends"), BAD_INPUTS)
def test_bad_input_exits_2_and_starts_nothing(tree, tmp_path, body, fragment, files, extends, dry_run):
    for name, text in files.items():
        write_yaml(tmp_path / name, text)
    t = tree(body, extends=extends)
    proc = run_sft("--config", t.config, dry_run=dry_run)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not torch_imported(proc)
    assert not t.output_dir.exists()


def test_missing_model_exits_2_on_the_dry_run(tree):
    proc = run_sft("--config", tree("model:\n  model: null\n").config)
    assert proc.returncode == 2
    assert "`model.model` is required" in proc.stderr


def test_missing_config_file_exits_2(tmp_path):
    proc = run_sft("--config", tmp_path / "none.yaml")
    assert proc.returncode == 2
    assert f"{tmp_path / 'none.yaml'}: config file not found" in proc.stderr


# ---------------------------------------------------------------------------- records


def _write_with_bad_box(data_dir: Path, name: str) -> Path:
    """A copy of train.jsonl (next to it, so image paths still resolve) whose line 3 has x2 < x1."""
    lines = (data_dir / "train.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    record["objects"] = [{"bbox_2d": [50, 10, 20, 40], "desc": "swapped box"}]
    lines[2] = json.dumps(record)
    path = data_dir / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry", "real"])
def test_an_invalid_record_exits_2_naming_file_and_line(tree, data_dir, dry_run):
    bad = _write_with_bad_box(data_dir, f"bad_error_{dry_run}.jsonl")
    t = tree(f"custom:\n  train_jsonl: {bad}\n")
    proc = run_sft("--config", t.config, dry_run=dry_run)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{bad}:3: objects[0].bbox_2d: x2 < x1" in proc.stderr
    assert "custom.bad_records: skip" in proc.stderr
    assert f"{bad}:1:" not in proc.stderr and f"{bad}:2:" not in proc.stderr
    assert not torch_imported(proc)
    assert not t.output_dir.exists()


def test_skip_policy_dry_run_reports_the_skipped_record(tree, data_dir):
    bad = _write_with_bad_box(data_dir, "bad_skip.jsonl")
    t = tree(f"custom:\n  train_jsonl: {bad}\n  bad_records: skip\n")
    proc = run_sft("--config", t.config)
    assert proc.returncode == 0, proc.stderr
    assert f"{bad}: 4 records kept, 1 skipped" in proc.stdout
    assert f"skipped {bad}:3: objects[0].bbox_2d: x2 < x1" in proc.stdout
    assert "samples: 4 train, 1 val" in proc.stdout
    assert not t.output_dir.exists()


# ---------------------------------------------------------------------------- the run directory


@pytest.mark.parametrize("body", ["", "tuner:\n  resume_from_checkpoint: auto\n"], ids=["plain", "resume-auto"])
def test_real_run_into_a_used_output_dir_exits_2_before_training(tree, body):
    t = tree(body)
    t.output_dir.mkdir()
    (t.output_dir / "notes.txt").write_text("earlier run")
    (t.output_dir / "checkpoint-3").mkdir()  # no trainer_state.json: not a complete checkpoint to resume
    proc = run_sft("--config", t.config, dry_run=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"`training.output_dir` = {t.output_dir} already holds a run" in proc.stderr
    assert "run.overwrite: true" in proc.stderr and "resume_from_checkpoint: auto" in proc.stderr
    assert not torch_imported(proc)
    # only the run lock (emptied when released) is added: nothing of the earlier run is touched
    assert sorted(p.name for p in t.output_dir.iterdir() if p.name != ".run.lock") == ["checkpoint-3", "notes.txt"]
    assert (t.output_dir / "notes.txt").read_text() == "earlier run"


def test_guard_output_dir(tmp_path):
    guard_output_dir(tmp_path / "new", overwrite=False, resuming=False)
    (tmp_path / "empty").mkdir()
    guard_output_dir(tmp_path / "empty", overwrite=False, resuming=False)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("")
    with pytest.raises(ConfigError, match="already holds a run"):
        guard_output_dir(used, overwrite=False, resuming=False)
    guard_output_dir(used, overwrite=True, resuming=False)
    guard_output_dir(used, overwrite=False, resuming=True)


def test_resume_auto_picks_the_newest_complete_checkpoint(tmp_path):
    assert resolve_resume(tmp_path / "none", "auto") is None
    for step, complete in ((9, True), (10, True), (12, False)):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
            (ckpt / "pytorch_model.bin").write_bytes(b"")  # weights present (a whole checkpoint)
    assert resolve_resume(tmp_path, "auto") == str(tmp_path / "checkpoint-10")  # numeric, not lexicographic
    assert resolve_resume(tmp_path, "/x/checkpoint-1") == "/x/checkpoint-1"
    assert resolve_resume(tmp_path, None) is None
