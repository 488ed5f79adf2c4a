"""On CPU, training keeps freed memory for reuse (src/training/cpu_memory.py): the LM head's large blocks
stop page-faulting anew at every step. Measured in fresh processes, by the kernel's count of page faults."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

# Forward and backward through an LM head of Qwen's vocabulary for 300 tokens (the logits: 182 MB), 8 steps;
# prints the minor page faults of each step.
STEPS = """
import resource, sys, torch
from src.training.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.manual_seed(0)
hidden, head = torch.randn(300, 64), torch.randn(151936, 64, requires_grad=True)
for _ in range(8):
    before = faults()
    (hidden @ head.T).logsumexp(-1).sum().backward()
    head.grad = None
    print(faults() - before)
"""


def _faults_per_step(mode: str) -> list[int]:
    proc = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [int(line) for line in proc.stdout.split()]


def test_large_blocks_are_reused_instead_of_faulted_in_at_every_step():
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.is_file() and "[always]" in thp.read_text():
        pytest.skip("transparent huge pages always on: a fault maps 2 MB, so the counts do not show the reuse")
    default, kept = _faults_per_step("default"), _faults_per_step("keep")
    assert len(default) == len(kept) == 8
    assert min(default[-3:]) > 100_000  # glibc maps and unmaps each large block: every step faults it in anew
    # Kept for reuse: the last steps fault (almost) nothing. The median of three, not their sum: the kernel's
    # reclaim (DAMON on this CI machine) may take the pages back once, and that step faults them in again.
    assert sorted(kept[-3:])[1] < 0.2 * min(default[-3:]), (kept, default)
