"""bench/gpu_bundle.py without the network: the repository part, the refusal to write over a folder, the size
limit, and run.sh installing local wheels into a temporary target and starting the check."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_bundle", REPO / "bench" / "gpu_bundle.py")
gpu_bundle = importlib.util.module_from_spec(_spec)
sys.modules["gpu_bundle"] = gpu_bundle
_spec.loader.exec_module(gpu_bundle)


def _bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "gpu_bundle.py"), *args], capture_output=True,
                          text=True, timeout=300)


def _wheel(folder: Path, name: str = "h4probe", version: str = "0.1") -> Path:
    """A minimal pure-Python wheel holding one module."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_the_repository_part_is_the_tracked_files_and_an_existing_folder_is_refused(tmp_path):
    out = tmp_path / "bundle"
    proc = _bundle("--out", str(out), "--no_wheels", "--budget_s", "300")
    assert proc.returncode == 0, proc.stderr
    copied = {str(p.relative_to(out / "repo")) for p in (out / "repo").rglob("*") if p.is_file()}
    assert copied == set(gpu_bundle.tracked_files(REPO))
    assert "bench/gpu_check.py" in copied and "src/sft.py" in copied
    assert not any(p.startswith((".git/", ".venv/")) for p in copied)
    assert (out / "repo" / "src" / "sft.py").read_bytes() == (REPO / "src" / "sft.py").read_bytes()
    run_sh = (out / "run.sh").read_text()
    assert os.access(out / "run.sh", os.X_OK)
    assert 'GPU_CHECK_BUDGET_S:-300' in run_sh and "--no-deps" in run_sh and "--target" in run_sh
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert f"size: {size / 2**20:.1f} MiB (limit 60 MiB)" in proc.stdout
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = _bundle("--out", str(out), "--no_wheels")
    assert again.returncode == 2 and "exists" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert not [p for p in tmp_path.iterdir() if p.name != "bundle"]  # no staging folder left behind


def test_over_the_size_limit_the_command_fails_and_names_the_largest_files(tmp_path):
    proc = _bundle("--out", str(tmp_path / "b"), "--no_wheels", "--max_mib", "0.01")
    assert proc.returncode == 1
    assert "over 0.01 MiB" in proc.stderr and "largest: repo/" in proc.stderr


@pytest.mark.slow  # pip install, then the check's start (about 4 s)
def test_run_sh_installs_the_wheels_into_a_temporary_target_and_runs_the_check(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    out = tmp_path / "bundle"
    assert _bundle("--out", str(out), "--wheel_dir", str(wheels)).returncode == 0
    assert [p.name for p in (out / "wheels").iterdir()] == ["h4probe-0.1-py3-none-any.whl"]
    results = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(results), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(out / "run.sh"), "--help"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    [target] = tmp_path.glob("gpu_check_site.*")
    assert "[run.sh] installed into" in proc.stdout and "h4probe" in proc.stdout
    assert (target / "h4probe" / "__init__.py").is_file()
    assert "--budget_s" in (results / "gpu_check.log").read_text()  # the check's own help, logged under $OUT
    assert not (out / "results").exists()


def test_wheels_are_pinned_to_what_was_tested_here():
    assert gpu_bundle.pinned("peft") == f"peft=={importlib.metadata.version('peft')}"
    assert gpu_bundle.pinned("no-such-package-h4") == "no-such-package-h4"
    assert {"ms-swift", "transformers", "peft", "trl", "datasets", "liger-kernel"} <= set(gpu_bundle.PACKAGES)


def test_wheels_not_installed_here_are_fetched_unpinned_and_named():
    specs, unpinned = gpu_bundle.pins(("peft", "no-such-package-h4"))
    assert specs == [f"peft=={importlib.metadata.version('peft')}", "no-such-package-h4"]
    assert unpinned == ["no-such-package-h4"]
    assert "unpinned (not installed here" in gpu_bundle.unpinned_note(unpinned)
    assert gpu_bundle.unpinned_note(unpinned).endswith(": no-such-package-h4")
    assert gpu_bundle.unpinned_note([]) is None
    here = gpu_bundle.pins(gpu_bundle.PACKAGES)[1]  # what this venv lacks of the bundle's packages
    assert all(gpu_bundle.pinned(p) == p for p in here)


def test_a_wheel_dir_that_is_not_a_folder_is_refused(tmp_path):
    proc = _bundle("--out", str(tmp_path / "b"), "--wheel_dir", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and not (tmp_path / "b").exists()
