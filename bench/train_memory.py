"""Benchmark (not a test): peak memory and seconds per training step with answer-only logits (issue 19, item 2).

The tiny Qwen3-VL (Qwen's 151,936-token vocabulary), stage-2 recipe on CPU, one dense 48-object sample repeated,
`IMAGE_MAX_TOKEN_NUM: 1024`. Each configuration runs `python -m src.sft` in its own process (peak = that
process's ru_maxrss, so runs do not contaminate each other): answer-only logits at batch 1 and 4, and ms-swift's
own path (`custom.answer_only_logits: false`) at batch 1 as the baseline (not at batch 4: it was killed by the
out-of-memory killer at 24 GB). A run whose resident memory passes `--kill_gb` is stopped.

Run: `.venv/bin/python bench/train_memory.py [--steps 4]`. Targets: batch 4 peak < 8 GB; batch 1 peak < 3 GB and
>= 2x faster per step than the baseline. It prints; it never fails on a figure.
"""

from __future__ import annotations

import argparse
import json
import os
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

CHILD = """
import resource, sys
from src.sft import main
code = main(["--config", sys.argv[1]])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(code)
"""


def write_data(folder: Path, n: int) -> Path:
    """`n` copies of one dense 48-object record (so every step sees the same sample)."""
    from gpu_check import write_dense_data

    write_dense_data(folder, n=1)
    record = (folder / "train.jsonl").read_text().splitlines()[0]
    (folder / "train.jsonl").write_text((record + "\n") * n)
    return folder / "train.jsonl"


def run(work: Path, name: str, batch: int, answer_only: bool, steps: int, data: Path, kill_gb: float) -> dict:
    """One configuration in its own process: peak RSS (GB) and the median seconds of the steps after the first."""
    import psutil

    config = {"extends": [str(REPO / "configs" / "stage_2_llm_lora.yaml"), str(REPO / "configs" / "cpu.yaml")],
              "model": {"model": str(work / "model")},
              "custom": {"train_jsonl": str(data), "health_check_samples": 0, "answer_only_logits": answer_only},
              "training": {"output_dir": str(work / name), "max_steps": steps, "logging_steps": 1,
                           "per_device_train_batch_size": batch, "save_strategy": "no", "eval_strategy": "no",
                           "report_to": []},
              "env": {"IMAGE_MAX_TOKEN_NUM": 1024}}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed = []

    def watch() -> None:
        try:
            child = psutil.Process(proc.pid)
            while proc.poll() is None:
                if child.memory_info().rss > kill_gb * 2**30:
                    killed.append(True)
                    proc.kill()
                time.sleep(0.2)
        except psutil.Error:
            pass

    threading.Thread(target=watch, daemon=True).start()
    out, _ = proc.communicate()
    if killed:
        return {"name": name, "killed": True}
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{out[-3000:]}")
    maxrss = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("MAXRSS_KB"))
    rows = [json.loads(line) for line in (work / name / "logging.jsonl").read_text().splitlines()]
    times = [r["step_time_s"] for r in rows if "step_time_s" in r][1:]
    return {"name": name, "peak_gb": maxrss / 2**20, "s_per_step": statistics.median(times) if times else float("nan"),
            "decision": next((line for line in out.splitlines() if "answer-only logits:" in line), "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--kill_gb", type=float, default=14.0)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="train_memory-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GROUNDING_CACHE_DIR", str(work / "verdicts"))
    from src.tiny_model import build_tiny_model

    if not (work / "model" / "config.json").is_file():
        build_tiny_model(work / "model")
    data = write_data(work / "dense", n=4 * (args.steps + 1))
    stamp = time.strftime("%H%M%S")
    base = run(work, f"swift_b1_{stamp}", 1, False, args.steps, data, args.kill_gb)
    new1 = run(work, f"answer_b1_{stamp}", 1, True, args.steps, data, args.kill_gb)
    new4 = run(work, f"answer_b4_{stamp}", 4, True, args.steps, data, args.kill_gb)
    print(f"tiny Qwen3-VL, vocabulary 151,936, one dense 48-object sample, IMAGE_MAX_TOKEN_NUM 1024, "
          f"CPU threads {os.cpu_count()}")
    print(f"{'run':<34}{'peak RSS':>10}{'target':>9}{'s/step':>9}{'target':>10}{'vs baseline':>13}")
    for result, peak_target, speed_target in ((base, "-", "-"), (new1, "< 3 GB", ">= 2x"), (new4, "< 8 GB", "-")):
        if result.get("killed"):
            print(f"{result['name']:<34}  killed above {args.kill_gb} GB")
            continue
        ratio = base["s_per_step"] / result["s_per_step"]
        print(f"{result['name']:<34}{result['peak_gb']:>8.2f}GB{peak_target:>9}{result['s_per_step']:>9.2f}"
              f"{speed_target:>10}{ratio:>12.2f}x")
    print(new1["decision"])


if __name__ == "__main__":
    main()
