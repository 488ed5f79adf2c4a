"""Benchmark (not a test): stage 3 (GRPO) memory on CPU (issue 19, item 3).

Two parts, each measurement in its own process (peak = that process's resident memory, so runs do not
contaminate each other; a process whose resident memory passes `--kill_gb` is stopped and reported as such):

1. Log-probabilities of completions, one policy pass (forward and backward, an arbitrary gradient per token as
   GRPO's loss gives) plus one pass without gradient (old policy / reference): the chunked path
   (src/training/completion_logps.py) against ms-swift 4.6's own `_get_logps_via_local_forward` on the same
   inputs, at the CPU bounds' size (4 completions of 1,024 tokens) and at the GPU recipe's (8 of 2,048; ms-swift's
   path there only if `--swift_at_recipe_size`: its logits alone are 10 GB per fp32 copy). The tiny Qwen3-VL,
   Qwen's 151,936-token vocabulary, a 128-token prompt; the figure is the peak above the memory before the pass.
2. `python -m src.sft --device cpu` on the shipped configs/stage_3_grpo.yaml (with configs/cpu.yaml and
   configs/cpu_grpo.yaml on top, as `gpus=cpu` runs it), the tiny Qwen3-VL standing for the stage-2 result, on
   dense records (48 objects each) for `--steps` steps: the process's peak resident memory against the 24 GB
   target, and the seconds per step.

Run: `.venv/bin/python bench/grpo_memory.py [--steps 2]` (a few minutes on 2 cores). Targets: the stage-3 run on
CPU < 24 GB; the chunked log-probabilities' peak a small fraction of ms-swift's. It prints; it never fails on a
figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
TARGET_GB = 24.0

LOGPS_CHILD = r"""
import inspect, json, sys, threading, time, types
import psutil, torch
from transformers import Qwen3VLForConditionalGeneration
from swift.rlhf_trainers.grpo_trainer import GRPOTrainer
from src.training.completion_logps import CompletionLogpsHead, local_forward

model_dir, impl, completions, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).train()
model.lm_head.weight.requires_grad_(False)  # tied to the embeddings, frozen as under LoRA
gen = torch.Generator().manual_seed(0)
input_ids = torch.randint(0, 150000, (completions, 128 + tokens), generator=gen)
inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
upstream = torch.randn(completions, tokens, generator=gen)
keys = inspect.signature(model.forward).parameters.keys()
swift_self = types.SimpleNamespace(model_kwarg_keys=keys, temperature=1.0,
                                   template=types.SimpleNamespace(padding_free=False))
head = CompletionLogpsHead(model.lm_head)

def logps(grad):
    with torch.set_grad_enabled(grad):
        if impl == "swift":
            return GRPOTrainer._get_logps_via_local_forward(swift_self, model, dict(inputs), tokens, input_ids)[0]
        return local_forward(model, dict(inputs), tokens, input_ids, head, 1.0, keys)[0]

process, peak, done = psutil.Process(), [0], threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.002)
before = process.memory_info().rss
threading.Thread(target=watch, daemon=True).start()
start = time.perf_counter()
logps(False)  # the old policy's / the reference's
(logps(True) * upstream).sum().backward()  # the policy's, with an arbitrary gradient per token
seconds = time.perf_counter() - start
done.set()
time.sleep(0.01)
print("RESULT", json.dumps({"peak_gb": (max(peak[0], process.memory_info().rss) - before) / 2**30, "s": seconds}))
"""

RUN_CHILD = """
import resource, sys
from src.sft import main
code = main(["--config", *sys.argv[1:]])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(code)
"""


def _watched(argv: list[str], kill_gb: float, env: dict | None = None) -> tuple[int | None, str]:
    """Run `argv`, stopping it when its resident memory passes `kill_gb`; (exit code or None if stopped, output)."""
    import psutil

    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    killed = []

    def watch() -> None:
        try:
            child = psutil.Process(proc.pid)
            while proc.poll() is None:
                if child.memory_info().rss > kill_gb * 2**30:
                    killed.append(True)
                    proc.kill()
                time.sleep(0.05)
        except psutil.Error:
            pass

    threading.Thread(target=watch, daemon=True).start()
    out, _ = proc.communicate()
    return (None if killed else proc.returncode), out


def logps_peak(model: Path, impl: str, completions: int, tokens: int, kill_gb: float) -> dict:
    """One log-probability measurement in its own process: {'peak_gb', 's'} or {'killed': True}."""
    code, out = _watched([sys.executable, "-c", LOGPS_CHILD, str(model), impl, str(completions), str(tokens)],
                         kill_gb)
    if code is None:
        return {"killed": True}
    if code != 0:
        raise SystemExit(f"log-probabilities ({impl}, {completions}x{tokens}) failed (exit {code}):\n{out[-3000:]}")
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def stage3_run(work: Path, model: Path, data: Path, steps: int, kill_gb: float, recipe_sizes: bool = False) -> dict:
    """The shipped stage-3 recipe with `--device cpu` for `steps` steps in its own process; `recipe_sizes`: with
    configs/cpu.yaml only (extended, no `--device cpu`), so the recipe's 8 completions of 2,048 tokens stay."""
    name = f"grpo_{'recipe_' if recipe_sizes else ''}{time.strftime('%H%M%S')}"
    recipe = str(REPO / "configs" / "stage_3_grpo.yaml")
    config = {"extends": [recipe, str(REPO / "configs" / "cpu.yaml")] if recipe_sizes else recipe,
              "model": {"model": str(model)},
              "run": {"init_from": str(model)},  # a full checkpoint standing for the stage-2 result
              "custom": {"train_jsonl": str(data), "health_check_samples": 0},
              "training": {"output_dir": str(work / name), "max_steps": steps, "save_strategy": "no",
                           "report_to": []}}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(config))
    started = time.perf_counter()
    device = [] if recipe_sizes else ["--device", "cpu"]
    code, out = _watched([sys.executable, "-c", RUN_CHILD, str(path), *device], kill_gb, env={"OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    if code is None:
        return {"killed": True}
    if code != 0:
        raise SystemExit(f"the stage-3 run failed (exit {code}):\n{out[-4000:]}")
    maxrss = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("MAXRSS_KB"))
    rows = [json.loads(line) for line in (work / name / "logging.jsonl").read_text().splitlines()]
    times = [r["step_time_s"] for r in rows if "step_time_s" in r]
    lengths = [r["completions/mean_length"] for r in rows if "completions/mean_length" in r]
    overrides = [line.strip() for line in out.splitlines() if re.match(r"\s*(rlhf|training)\.\S+: .* -> ", line)
                 and "cpu_grpo.yaml" in line]
    return {"peak_gb": maxrss / 2**20, "s_per_step": statistics.median(times) if times else float("nan"),
            "wall_s": wall, "mean_length": statistics.mean(lengths) if lengths else float("nan"),
            "decision": next((line for line in out.splitlines() if "completion log-probabilities:" in line), ""),
            "overrides": overrides}


def _gb(result: dict, kill_gb: float) -> str:
    return f"killed above {kill_gb:g} GB" if result.get("killed") else f"{result['peak_gb']:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2, help="GRPO steps of the stage-3 run")
    parser.add_argument("--kill_gb", type=float, default=14.0, help="stop a process whose memory passes this")
    parser.add_argument("--swift_at_recipe_size", action="store_true",
                        help="also run ms-swift's log-probabilities at 8 x 2,048 (10 GB of logits per copy)")
    parser.add_argument("--skip_run", action="store_true", help="only the log-probability measurements")
    parser.add_argument("--recipe_sizes", action="store_true",
                        help="also run the stage-3 recipe on CPU without configs/cpu_grpo.yaml's bounds (8 completions "
                             "of 2,048 tokens; one step, about 4x as long)")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="grpo_memory-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GROUNDING_CACHE_DIR", str(work / "verdicts"))
    from gpu_check import write_dense_data

    from src.tiny_model import build_tiny_model

    model = work / "model"
    if not (model / "config.json").is_file():
        build_tiny_model(model)
    data = work / "dense" / "train.jsonl"
    if not data.is_file():
        write_dense_data(data.parent, n=8, objects=48)

    print(f"tiny Qwen3-VL, vocabulary 151,936, CPU threads {os.cpu_count()}")
    print("== log-probabilities of completions: one pass without gradient + one with (peak above the start)")
    print(f"{'completions x tokens':<24}{'chunked':>12}{'ms-swift':>22}{'ms-swift / chunked':>20}"
          f"{'s chunked':>11}{'s ms-swift':>12}")
    sizes = [(4, 1024, True), (8, 2048, args.swift_at_recipe_size)]
    for completions, tokens, with_swift in sizes:
        mine = logps_peak(model, "chunked", completions, tokens, args.kill_gb)
        theirs = logps_peak(model, "swift", completions, tokens, args.kill_gb) if with_swift else None
        label = f"{completions} x {tokens:,}"
        if theirs is None:
            logits_gb = completions * tokens * 151936 * 4 / 2**30
            swift, ratio, seconds = f"not run ({logits_gb:.1f} GB/copy)", "-", "-"
        elif theirs.get("killed") or mine.get("killed"):
            swift, ratio, seconds = _gb(theirs, args.kill_gb), "-", "-"
        else:
            swift, ratio = _gb(theirs, args.kill_gb), f"{theirs['peak_gb'] / max(mine['peak_gb'], 1e-3):.1f}x"
            seconds = f"{theirs['s']:.1f}"
        print(f"{label:<24}{_gb(mine, args.kill_gb):>12}{swift:>22}{ratio:>20}"
              f"{mine.get('s', float('nan')):>11.1f}{seconds:>12}")
    if args.skip_run:
        return
    print(f"== configs/stage_3_grpo.yaml with --device cpu, {args.steps} steps, dense records (48 objects)")
    result = stage3_run(work, model, data, args.steps, max(args.kill_gb, TARGET_GB))
    if result.get("killed"):
        print(f"killed above {max(args.kill_gb, TARGET_GB):g} GB (target < {TARGET_GB:g} GB)")
        return
    for line in result["overrides"]:
        print(f"  {line}")
    print(f"  {result['decision']}")
    share = result["peak_gb"] / TARGET_GB
    print(f"peak RSS {result['peak_gb']:.2f} GB, target < {TARGET_GB:g} GB ({share:.2f} of it); "
          f"{result['s_per_step']:.1f} s/step, completions {result['mean_length']:.0f} tokens on average, "
          f"{result['wall_s']:.0f} s in all")
    if args.recipe_sizes:
        print("== the same with configs/cpu.yaml only (the recipe's 8 completions of 2,048 tokens), 1 step")
        full = stage3_run(work, model, data, 1, max(args.kill_gb, TARGET_GB), recipe_sizes=True)
        if full.get("killed"):
            print(f"killed above {max(args.kill_gb, TARGET_GB):g} GB (target < {TARGET_GB:g} GB)")
            return
        print(f"peak RSS {full['peak_gb']:.2f} GB, target < {TARGET_GB:g} GB ({full['peak_gb'] / TARGET_GB:.2f} of "
              f"it); {full['s_per_step']:.1f} s/step ({full['s_per_step'] / result['s_per_step']:.1f}x the bounded "
              f"run's), completions {full['mean_length']:.0f} tokens on average")


if __name__ == "__main__":
    main()
