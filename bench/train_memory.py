"""Benchmark (not a test): peak memory and seconds per training step with answer-only logits (issue 19, item 2).

The tiny Qwen3-VL (Qwen's 151,936-token vocabulary), stage-2 recipe on CPU, one dense 48-object sample repeated,
`IMAGE_MAX_TOKEN_NUM: 1024`. Each configuration runs `python -m src.sft`'s `main` in its own process (peak = that
process's ru_maxrss, so runs do not contaminate each other): ms-swift's own path (`custom.answer_only_logits:
false`, everything else the same) at batch 1 as the baseline, then answer-only logits at batch 1 and 4 (ms-swift's
path is not run at batch 4: the out-of-memory killer stopped it at 24 GB). A run whose resident memory passes
`--kill_gb` is stopped. Seconds per step are the median of the steps after `--warmup` (the first steps grow the
heap: ms-swift's path spends seconds there faulting in its gigabytes of logits).

Then, unless `--no_profile`, one more short run of each path at batch 1 under torch.profiler (steps 3 and 4): where
a step goes, in ms per step: the data, the forward and the backward each split into the LM head with its loss
(every operator on a vocabulary-wide tensor, by self time) and the rest, the optimizer, and what is left (ms-swift's
callbacks, logging, the step accounting).

`--head_only`: the LM head and its loss alone, both ways, in this process (no training, no data): what the
kernel itself gains.

Run: `.venv/bin/python bench/train_memory.py [--steps 8] [--warmup 2] [--threads N] [--head_only]`.
Targets (issue 19): batch 4 peak < 8 GB;
batch 1 peak < 3 GB and >= 2x faster per step than the baseline. It prints each figure, its target and its ratio
against the baseline run in the same invocation; it never fails on a figure.
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
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

VOCAB = 151_936
PROFILED_STEPS = (3, 4)  # 1-based steps under the profiler: after the heap has grown


def write_data(folder: Path, n: int) -> Path:
    """`n` copies of one dense 48-object record (so every step sees the same sample)."""
    from gpu_check import write_dense_data

    write_dense_data(folder, n=1)
    record = (folder / "train.jsonl").read_text().splitlines()[0]
    (folder / "train.jsonl").write_text((record + "\n") * n)
    return folder / "train.jsonl"


# ------------------------------------------------------------------------------------------------ child process

def _profiled(main, argv: list[str]) -> tuple[int, dict]:
    """Run `main(argv)` with torch.profiler over PROFILED_STEPS; (exit code, ms per step by part)."""
    import accelerate
    import transformers
    from torch.profiler import ProfilerActivity, profile, record_function

    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    window: dict[str, float] = {}

    def labelled(label, fn):
        def wrapper(*args, **kwargs):
            with record_function(label):
                return fn(*args, **kwargs)
        return wrapper

    class Window(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == PROFILED_STEPS[0] - 1:
                window["start"] = time.perf_counter()
                prof.start()
            elif state.global_step == PROFILED_STEPS[-1] and "start" in window and "end" not in window:
                prof.stop()
                window["end"] = time.perf_counter()

    train = transformers.Trainer.train

    def train_with_labels(self, *args, **kwargs):
        self.add_callback(Window())
        self.compute_loss = labelled("bench.forward", self.compute_loss)  # around the project's own wrapper
        return train(self, *args, **kwargs)

    transformers.Trainer.train = train_with_labels
    transformers.Trainer.get_batch_samples = labelled("bench.data", transformers.Trainer.get_batch_samples)
    accelerate.Accelerator.backward = labelled("bench.backward", accelerate.Accelerator.backward)
    code = main(argv)
    if "end" not in window:
        return code, {}
    steps = len(PROFILED_STEPS)
    parts: dict[str, float] = defaultdict(float)
    regions = {"bench.data": "data", "bench.forward": "forward", "bench.backward": "backward"}

    def region(event) -> str:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name in regions:
                return regions[parent.name]
            if parent.name.startswith("Optimizer.step#"):
                return "optimizer"
            parent = parent.cpu_parent
        return "other"

    for event in prof.events():
        if event.name in regions:
            parts[regions[event.name]] += event.cpu_time_total
        elif event.name.startswith("Optimizer.step#"):
            parts["optimizer"] += event.cpu_time_total
        shapes = [s for s in (event.input_shapes or []) if isinstance(s, list)]
        if any(VOCAB in s for s in shapes):
            parts[f"head_{region(event)}"] += event.self_cpu_time_total
    figures = {key: value / 1e3 / steps for key, value in parts.items()}  # microseconds -> ms per step
    figures["step"] = (window["end"] - window["start"]) * 1e3 / steps
    return code, figures


def _cpu_clock() -> list[float]:
    """Patch the trainer so that each step's end appends this process's CPU seconds (all threads) to the list."""
    import transformers

    marks: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.process_time())

    train = transformers.Trainer.train

    def train_with_clock(self, *args, **kwargs):
        self.add_callback(Clock())
        return train(self, *args, **kwargs)

    transformers.Trainer.train = train_with_clock
    return marks


def child(config: str, profile: bool) -> int:
    """The child process: train on `config`, print its peak RSS, its CPU seconds per step (and the profile when
    asked)."""
    import resource

    from src.sft import main

    marks = _cpu_clock()
    if profile:
        code, figures = _profiled(main, ["--config", config])
        print("PROFILE", json.dumps(figures), flush=True)
    else:
        code = main(["--config", config])
    print("CPU_STEPS", json.dumps([round(b - a, 4) for a, b in zip(marks[:-1], marks[1:], strict=True)]), flush=True)
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
    return code


# ------------------------------------------------------------------------------------------------ parent

def run(work: Path, name: str, batch: int, answer_only: bool, steps: int, warmup: int, data: Path, kill_gb: float,
        profile: bool = False) -> dict:
    """One configuration in its own process: peak RSS (GB), the median seconds of the steps after `warmup`, the
    logged losses, the answer-only decision line, and (profile) ms per step by part."""
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
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(path)] + (["--profile"] if profile else [])
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = []

    def watch() -> None:
        try:
            process = psutil.Process(proc.pid)
            while proc.poll() is None:
                if process.memory_info().rss > kill_gb * 2**30:
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
    lines = out.splitlines()
    maxrss = next(int(line.split()[1]) for line in lines if line.startswith("MAXRSS_KB"))
    rows = [json.loads(line) for line in (work / name / "logging.jsonl").read_text().splitlines()]
    times = [r["step_time_s"] for r in rows if "step_time_s" in r][warmup:]
    cpu = json.loads(next(line for line in lines if line.startswith("CPU_STEPS")).split(" ", 1)[1])[warmup:]
    result = {"name": name, "peak_gb": maxrss / 2**20, "s_per_step": statistics.median(times) if times else None,
              "cpu_s_per_step": statistics.median(cpu) if cpu else None,
              "step_times": [r["step_time_s"] for r in rows if "step_time_s" in r],
              "losses": [(r["loss"], r["token_acc"]) for r in rows if "loss" in r and "token_acc" in r],
              "decision": next((line for line in lines if "answer-only logits:" in line), "")}
    profiled = next((line for line in lines if line.startswith("PROFILE ")), None)
    if profiled:
        result["profile"] = json.loads(profiled.split(" ", 1)[1])
    return result


def _ratio(base: float | None, value: float | None) -> str:
    return f"{base / value:.2f}x" if base and value else "-"


def print_table(base: dict, new1: dict, new4: dict, kill_gb: float) -> None:
    """Each figure, its target, whether it is met, and its ratio against the baseline of this invocation."""
    print(f"{'run':<28}{'peak RSS':>10}{'target':>9}{'met':>5}{'base/this':>11}"
          f"{'s/step':>8}{'target':>14}{'met':>5}{'base/this':>11}{'CPU s/step':>12}{'base/this':>11}")
    rows = ((base, None, None, "ms-swift's path (baseline)"), (new1, 3.0, 2.0, "answer-only, batch 1"),
            (new4, 8.0, None, "answer-only, batch 4"))
    for result, peak_target, speed_target, label in rows:
        if result.get("killed"):
            print(f"{label:<28}  killed above {kill_gb} GB")
            continue
        peak, speed, cpu = result["peak_gb"], result["s_per_step"], result["cpu_s_per_step"]
        peak_met = "-" if peak_target is None else ("yes" if peak < peak_target else "NO")
        speedup = base["s_per_step"] / speed if base.get("s_per_step") and speed else None
        speed_met = "-" if speed_target is None or speedup is None else ("yes" if speedup >= speed_target else "NO")
        print(f"{label:<28}{peak:>8.2f}GB{'-' if peak_target is None else f'< {peak_target:g} GB':>9}{peak_met:>5}"
              f"{_ratio(base.get('peak_gb'), peak):>11}{speed:>8.2f}"
              f"{'-' if speed_target is None else f'>= {speed_target:g}x faster':>14}{speed_met:>5}"
              f"{_ratio(base.get('s_per_step'), speed):>11}{cpu:>12.2f}{_ratio(base.get('cpu_s_per_step'), cpu):>11}")
    print("s/step: wall (the target's figure); CPU s/step: this process's CPU time over all its threads, which "
          "other processes on the machine disturb less. Batch 4's figures are per step of 4 samples.")


PARTS = (("data", "data (encoding, collation)"), ("head_forward", "forward: LM head + loss"),
         ("forward_rest", "forward: the rest"), ("head_backward", "backward: LM head + loss"),
         ("backward_rest", "backward: the rest"), ("optimizer", "optimizer"), ("rest", "other (callbacks, logging)"),
         ("step", "step (wall)"))


def print_profile(base: dict, new: dict) -> None:
    """Ms per step by part for both paths, and what a 2x speed-up at batch 1 would need."""
    def parts(profile: dict) -> dict:
        out = dict(profile)
        out["forward_rest"] = profile.get("forward", 0.0) - profile.get("head_forward", 0.0)
        out["backward_rest"] = profile.get("backward", 0.0) - profile.get("head_backward", 0.0)
        known = ("data", "forward", "backward", "optimizer")
        out["rest"] = profile["step"] - sum(profile.get(k, 0.0) for k in known) - profile.get("head_other", 0.0)
        out["head_forward"] = profile.get("head_forward", 0.0) + profile.get("head_other", 0.0)
        return out

    b, n = parts(base["profile"]), parts(new["profile"])
    print(f"\nwhere a batch-1 step goes (torch.profiler, steps {PROFILED_STEPS[0]}-{PROFILED_STEPS[-1]}, ms per step; "
          "LM head + loss = every operator on a vocabulary-wide tensor, by self time)")
    print(f"{'part':<32}{'ms-swift':>10}{'answer-only':>13}{'baseline/this':>15}")
    for key, label in PARTS:
        print(f"{label:<32}{b.get(key, 0.0):>10.0f}{n.get(key, 0.0):>13.0f}{_ratio(b.get(key), n.get(key)):>15}")
    head = n.get("head_forward", 0.0) + n.get("head_backward", 0.0)
    need = b["step"] / 2
    print(f"2x at batch 1 needs an answer-only step <= {need:.0f} ms: its LM head + loss take {head:.0f} ms and the "
          f"rest of its step {n['step'] - head:.0f} ms under the profiler. At batch 1 ms-swift already projects only "
          "the labelled positions (logits_to_keep), so both paths run the same two products over the vocabulary "
          "(logits, and the gradient into the hidden states); what answer-only saves is the gigabytes of fp32 "
          "logits and the passes over them.")


def head_only(rows: int = 1799, hidden: int = 64, repeats: int = 6) -> None:
    """The LM head and its loss alone, in this process, heap kept as training keeps it: ms-swift's computation at
    batch 1 (fp32 logits of the labelled positions, cross-entropy, argmax, backward into the hidden states)
    against the answer-only kernel, alternated, the fastest of `repeats` - 1 (the first warms the heap)."""
    import torch

    from src.training.answer_logits import linear_cross_entropy
    from src.training.cpu_memory import keep_freed_memory

    keep_freed_memory()
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB, hidden, generator=gen) * 0.02
    states = torch.randn(rows, hidden, generator=gen).requires_grad_()
    targets = torch.randint(0, VOCAB, (rows,), generator=gen)

    def swift() -> None:
        logits = torch.nn.functional.linear(states, weight).float()
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        _ = logits.argmax(-1) == targets
        loss.backward()

    def answer_only() -> None:
        linear_cross_entropy(states, weight, None, targets)[0].backward()

    times: dict[str, list[tuple[float, float]]] = {"swift": [], "answer_only": []}
    for _ in range(repeats):
        for name, fn in (("swift", swift), ("answer_only", answer_only)):
            states.grad = None
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    best = {name: (min(c for c, _ in v[1:]), min(w for _, w in v[1:])) for name, v in times.items()}
    print(f"\nLM head + loss alone ({rows} labelled positions, hidden {hidden}, {torch.get_num_threads()} threads): "
          f"ms-swift {best['swift'][1]:.2f} s wall / {best['swift'][0]:.2f} s CPU, answer-only "
          f"{best['answer_only'][1]:.2f} s / {best['answer_only'][0]:.2f} s: "
          f"{_ratio(best['swift'][1], best['answer_only'][1])} wall, "
          f"{_ratio(best['swift'][0], best['answer_only'][0])} CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the median (heap growth)")
    parser.add_argument("--kill_gb", type=float, default=14.0)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--no_profile", action="store_true", help="skip the two profiled runs")
    parser.add_argument("--head_only", action="store_true",
                        help="only the LM head and its loss, both ways, in this process (a minute)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every run (default: torch's, the cores)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.exit(child(args.child, args.profile))
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every run alike
    if args.head_only:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        head_only()
        return
    work = (args.work or Path(tempfile.mkdtemp(prefix="train_memory-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GROUNDING_CACHE_DIR", str(work / "verdicts"))
    from src.tiny_model import build_tiny_model

    if not (work / "model" / "config.json").is_file():
        build_tiny_model(work / "model")
    data = write_data(work / "dense", n=4 * (args.steps + 1))
    stamp = time.strftime("%H%M%S")
    common = (args.steps, args.warmup, data, args.kill_gb)
    base = run(work, f"swift_b1_{stamp}", 1, False, *common)
    new1 = run(work, f"answer_b1_{stamp}", 1, True, *common)
    new4 = run(work, f"answer_b4_{stamp}", 4, True, *common)
    threads = os.environ.get("OMP_NUM_THREADS") or os.cpu_count()
    print(f"\ntiny Qwen3-VL, vocabulary {VOCAB:,}, one dense 48-object sample, IMAGE_MAX_TOKEN_NUM 1024, "
          f"{threads} threads on {os.cpu_count()} CPUs, {args.steps} steps, s/step = median after {args.warmup}; "
          f"load average at the end {os.getloadavg()[0]:.1f} (above the CPU count, other processes slow every figure)")
    print_table(base, new1, new4, args.kill_gb)
    for result in (base, new1):
        print(f"{result['name']}: step times {result['step_times']}")
    same = all(abs(a - b) <= 1e-5 and abs(c - d) <= 1e-5
               for (a, c), (b, d) in zip(base["losses"], new1["losses"], strict=True))
    print(f"batch 1 losses and token_acc equal to 1e-5 on every step: {same}")
    print(new1["decision"])
    if not args.no_profile:
        steps = PROFILED_STEPS[-1] + 1
        profiled = [run(work, f"{name}_profile_{stamp}", 1, on, steps, 0, data, args.kill_gb, profile=True)
                    for name, on in (("swift_b1", False), ("answer_b1", True))]
        if all("profile" in p for p in profiled):
            print_profile(*profiled)


if __name__ == "__main__":
    main()
