"""Bundle for a GPU machine: the repository plus the wheels a bare CUDA + PyTorch image lacks, and a `run.sh`.

    python bench/gpu_bundle.py --out DIR [--budget_s 420] [--no_wheels | --wheel_dir DIR] [--max_mib 60]

DIR (refused if it exists) then holds `repo/` (the repository's tracked files as they are in the working tree:
no .venv, no .git), `wheels/` (cp312 manylinux x86_64 wheels of `PACKAGES`, each pinned to the version installed
here where it is installed here; one that is not (liger-kernel in this project's venv) is fetched unpinned, the
index's latest, and the command prints which and why; fetched with `pip download --only-binary=:all: --no-deps`
from the package index; any that cannot be fetched are listed, and the bundle is made without them), and
`run.sh`, which installs the wheels into a temporary target (`pip install --no-deps --target`), puts it and
`repo/` on PYTHONPATH, and runs `bench/gpu_check.py` with the budget, writing its JSONL and log under `$OUT`
(or DIR/results). The folder's size is printed; over `--max_mib` (60 MiB: one run's transfer limit, less
headroom) the command fails (exit 1).
Exit 2: DIR exists, or a --wheel_dir that is not a folder.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 2**20
# What the H200 image (Python 3.12, torch, transformers 5.17, peft, accelerate) lacked for
# `import swift, src.sft, src.infer, src.eval` (../shared/docs/ms-swift-4.6.md, "Measured on one H200"), plus
# liger-kernel (the Liger scenario) and msgspec (ms-swift's GRPO imports it).
PACKAGES = ("ms-swift", "transformers", "peft", "trl", "datasets", "dill", "multiprocess", "modelscope",
            "modelscope-hub", "qwen-vl-utils", "dashscope", "json_repair", "pydantic", "pydantic-core",
            "annotated-types", "typing-inspection", "orjson", "pycocotools", "cryptography", "cffi",
            "websocket-client", "zstandard", "regex", "fsspec", "liger-kernel", "addict", "attrdict", "binpacking",
            "dacite", "msgspec")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")  # older glibc tags first; any-platform wheels too
PYTHON_VERSION = "3.12"

RUN_SH = """#!/usr/bin/env bash
# The GPU check from this bundle (made by bench/gpu_bundle.py): installs wheels/ into a temporary target,
# puts it and repo/ on PYTHONPATH (nothing is installed into the machine's Python), and runs
# bench/gpu_check.py. Results (JSONL + log) go to $OUT when set, else to results/ here.
# Usage: bash run.sh [more gpu_check.py flags]; GPU_CHECK_BUDGET_S overrides the budget ({budget_s} s).
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
PY="${{PYTHON:-python3}}"
BUDGET_S="${{GPU_CHECK_BUDGET_S:-{budget_s}}}"
TARGET="$(mktemp -d "${{TMPDIR:-/tmp}}/gpu_check_site.XXXXXX")"
shopt -s nullglob
WHEELS=("$HERE"/wheels/*.whl)
if (( ${{#WHEELS[@]}} )); then
  "$PY" -m pip install --quiet --no-deps --no-index --disable-pip-version-check --target "$TARGET" "${{WHEELS[@]}}"
fi
echo "[run.sh] installed into $TARGET: $("$PY" -c 'import importlib.metadata as m, sys
print(" ".join(sorted(d.metadata["Name"] for d in m.distributions(path=[sys.argv[1]]))))' "$TARGET")"
export PYTHONPATH="$HERE/repo:$TARGET${{PYTHONPATH:+:$PYTHONPATH}}"
RESULTS="${{OUT:-$HERE/results}}"
mkdir -p "$RESULTS"
WORK="${{GPU_CHECK_WORK:-${{TMPDIR:-/tmp}}/gpu_check_work}}"
"$PY" "$HERE/repo/bench/gpu_check.py" --budget_s "$BUDGET_S" --work "$WORK" --out "$RESULTS/gpu_check.jsonl" "$@" \\
  2>&1 | tee -a "$RESULTS/gpu_check.log"
"""


def tracked_files(repo: Path) -> list[str]:
    """The repository's tracked paths that exist in the working tree (`git ls-files`; .venv, .git and every
    ignored or untracked file left out)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (repo / p).is_file()]


def copy_repo(repo: Path, dest: Path) -> int:
    """Copy the tracked files of `repo` into `dest` (modes kept); return how many."""
    files = tracked_files(repo)
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)
    return len(files)


def pinned(package: str) -> str:
    """`package==version` as installed here (the GPU runs what was tested), or the bare name if not installed."""
    try:
        return f"{package}=={importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


def pins(packages: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(a pip spec per package, `pinned`; the packages left unpinned because they are not installed here)."""
    specs = [pinned(p) for p in packages]
    return specs, [p for p, spec in zip(packages, specs, strict=True) if spec == p]


def unpinned_note(unpinned: list[str]) -> str | None:
    """The line saying which wheels are not pinned and why (None when every one is)."""
    if not unpinned:
        return None
    return f"  unpinned (not installed here, so not tested here: the index's latest): {', '.join(unpinned)}"


def download_command(specs: list[str], dest: Path) -> list[str]:
    """The pip command fetching cp312 manylinux x86_64 (or pure-Python) wheels of `specs` without dependencies."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    return [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
            "--no-deps", "--python-version", PYTHON_VERSION, "--implementation", "cp", *platforms, "-d", str(dest),
            *specs]


def download_wheels(packages: tuple[str, ...], dest: Path) -> list[tuple[str, str]]:
    """Fetch each package's wheel into `dest` (all in one pip call, one by one where that fails); return the
    (spec, pip's last error line) of those that could not be fetched."""
    dest.mkdir(parents=True, exist_ok=True)
    specs = pins(packages)[0]
    if subprocess.run(download_command(specs, dest), capture_output=True, text=True).returncode == 0:
        return []
    missing = []
    for spec in specs:
        proc = subprocess.run(download_command([spec], dest), capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [x for x in (proc.stderr or proc.stdout).splitlines() if x.strip()]
            missing.append((spec, lines[-1] if lines else f"pip exited {proc.returncode}"))
    return missing


def folder_size(folder: Path) -> int:
    """Bytes of every file under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_run_sh(folder: Path, budget_s: float) -> Path:
    """`folder/run.sh` (executable) running the check with `budget_s`."""
    path = folder / "run.sh"
    path.write_text(RUN_SH.format(budget_s=f"{budget_s:g}"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The bundle's flags."""
    parser = argparse.ArgumentParser(prog="python bench/gpu_bundle.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the bundle folder to make (must not exist)")
    parser.add_argument("--budget_s", type=float, default=420, help="the check's budget written into run.sh")
    wheels = parser.add_mutually_exclusive_group()
    wheels.add_argument("--no_wheels", action="store_true", help="the repository and run.sh only")
    wheels.add_argument("--wheel_dir", type=Path, help="take the wheels from this folder instead of the index")
    parser.add_argument("--max_mib", type=float, default=60, help="fail when the folder is larger (MiB)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Make the bundle; 0 done, 1 over --max_mib (the folder is kept to look at), 2 a refused argument."""
    args = build_parser().parse_args(argv)
    out = args.out.resolve()
    if out.exists():
        print(f"error: --out {out} exists; the bundle is written only into a new folder", file=sys.stderr)
        return 2
    if args.wheel_dir is not None and not args.wheel_dir.is_dir():
        print(f"error: --wheel_dir {args.wheel_dir} is not a folder", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built next to the target and moved in whole: a failed bundle leaves no half-made folder at --out.
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-", dir=out.parent) as tmp:
        staging = Path(tmp) / out.name
        n_files = copy_repo(REPO, staging / "repo")
        (staging / "wheels").mkdir()
        missing: list[tuple[str, str]] = []
        if args.wheel_dir is not None:
            for wheel in sorted(args.wheel_dir.glob("*.whl")):
                shutil.copy2(wheel, staging / "wheels" / wheel.name)
        elif not args.no_wheels:
            note = unpinned_note(pins(PACKAGES)[1])
            if note:
                print(note, flush=True)
            missing = download_wheels(PACKAGES, staging / "wheels")
        write_run_sh(staging, args.budget_s)
        shutil.move(str(staging), out)
    wheels = sorted(p.name for p in (out / "wheels").glob("*.whl"))
    size = folder_size(out)
    print(f"bundle: {out}: {n_files} repository files, {len(wheels)} wheels "
          f"({folder_size(out / 'wheels') / MIB:.1f} MiB), run.sh with a {args.budget_s:g} s budget")
    for spec, why in missing:
        print(f"  not fetched: {spec}: {why}")
    print(f"size: {size / MIB:.1f} MiB (limit {args.max_mib:g} MiB)")
    if size > args.max_mib * MIB:
        largest = sorted((p for p in out.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size, reverse=True)
        print(f"error: {out} is {size / MIB:.1f} MiB, over {args.max_mib:g} MiB; largest: "
              + ", ".join(f"{p.relative_to(out)} {p.stat().st_size / MIB:.1f} MiB" for p in largest[:5]),
              file=sys.stderr)
        return 1
    print(f"on the GPU machine: bash {out.name}/run.sh  (results under $OUT, or {out.name}/results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
