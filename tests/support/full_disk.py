"""A command run against a really full disk (the pattern of tests/test_faults.py): a folder becomes a small
tmpfs in a private mount namespace (`unshare -rm`), holding a copy of what it held, filled to its last byte,
so every write there meets ENOSPC as on a full disk. Where mount namespaces are not allowed, callers skip."""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FILLER = ".filler"


@functools.lru_cache(maxsize=1)
def can_fill_a_disk() -> bool:
    """True when a private mount namespace can mount a tmpfs here."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as probe:
        done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {probe}"],
                              capture_output=True)
    return done.returncode == 0


def run_on_full_disk(folder: Path, argv: list[str], *, size: str = "64k") -> tuple[subprocess.CompletedProcess, Path]:
    """Run `argv` (in the repository) while `folder` is a full tmpfs of `size` holding a copy of `folder`'s files;
    return the result and a folder holding what `folder` held when it ended (the filler left out)."""
    before = folder.with_name(folder.name + ".before")
    left = folder.with_name(folder.name + ".left")
    shutil.copytree(folder, before)
    left.mkdir()
    q = shlex.quote
    script = (f"mount -t tmpfs -o size={size} none {q(str(folder))} && cp -a {q(str(before))}/. {q(str(folder))}/ "
              f"&& {{ cat /dev/zero > {q(str(folder / FILLER))} 2>/dev/null; true; }} && {shlex.join(argv)}; rc=$?; "
              f"rm -f {q(str(folder / FILLER))}; cp -a {q(str(folder))}/. {q(str(left))}/; exit $rc")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    return result, left
