"""Benchmark (not a test): does stage 3 (GRPO with the grounding rewards) improve on what SFT leaves?

On a small synthetic set, the tiny model is trained by SFT for too few steps to get the boxes right (AP50
well below 1: the answers have the format, the boxes are off), then GRPO runs N steps from that checkpoint
with `grounding_format`, `grounding_f1` and `grounding_iou`. AP50 on the same images (`src.infer` +
`src.eval`, greedy) is printed before and after, with the ratio; the SFT checkpoint's AP50 is the baseline,
measured in the same run. Everything goes through the project's own commands (`python -m src.sft`, ...).

Run: `.venv/bin/python bench/grpo_gain.py [--records 5] [--sft-epochs 60] [--grpo-steps 40] [--temperature 0.7]
[--learning-rate 2e-4] [--beta 0.04] [--tuner lora|full] [--work DIR]` (a `--work` kept from an earlier run
reuses its SFT checkpoint).
Target: AP50 after GRPO >= AP50 after SFT (ratio >= 1.0). It prints; it never fails on a figure. About 10
minutes on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Run a project command (it must succeed); its wall time in seconds."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env={**os.environ, **(env or {})}, text=True,
                          capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.monotonic() - started


def ap50(config: Path, checkpoint: Path, records: Path, out: Path) -> float:
    """AP50 (class-agnostic) of `checkpoint` answering `records` greedily."""
    run(["-m", "src.infer", "--config", str(config), "--checkpoint", str(checkpoint), "--jsonl", str(records),
         "--out", str(out / "pred.jsonl"), "--max_new_tokens", "256", "--overwrite"])
    run(["-m", "src.eval", "--pred", str(out / "pred.jsonl"), "--gt", str(records), "--out", str(out / "m.json"),
         "--overwrite"])
    return float(json.loads((out / "m.json").read_text())["class_agnostic"]["AP50"] or 0.0)


def write_config(path: Path, body: dict) -> Path:
    path.write_text(json.dumps(body, indent=2))  # JSON is YAML
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5)
    parser.add_argument("--sft-epochs", type=int, default=60, help="short of memorising: AP50 about 0.4, half the "
                                                                   "answers unparseable")
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the rollouts")
    parser.add_argument("--learning-rate", type=float, default=2.0e-4)
    parser.add_argument("--beta", type=float, default=0.04, help="KL weight to the SFT model")
    parser.add_argument("--tuner", choices=["lora", "full"], default="lora", help="stage 3's own LoRA (the recipe) "
                                                                                   "or the whole LLM")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="grpo_gain-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model, data = work / "model", work / "data"
    if not (model / "config.json").is_file():
        run(["-m", "src.tiny_model", "--out", str(model)])
    if not (data / "train.jsonl").is_file():
        run(["-m", "src.datasets", "synth", "--out", str(data), "--n", str(args.records), "--overwrite"])
    records = data / "train.jsonl"
    cpu = str(REPO / "configs" / "cpu.yaml")
    sft = write_config(work / "sft.yaml", {
        "extends": [str(REPO / "configs" / "demo" / "memorise.yaml"), cpu],
        "model": {"model": str(model)}, "custom": {"train_jsonl": str(records), "val_jsonl": None},
        "eval": {"samples": 0},
        "training": {"output_dir": str(work / "sft"), "num_train_epochs": args.sft_epochs, "eval_strategy": "no",
                     "save_strategy": "epoch", "save_total_limit": 1, "metric_for_best_model": None,
                     "eval_on_start": False}})
    sft_s = run(["-m", "src.sft", "--config", str(sft)]) if not (work / "sft" / "last-checkpoint").exists() else 0.0
    sft_ckpt = (work / "sft" / "last-checkpoint").resolve()
    before = ap50(sft, sft_ckpt, records, work / "eval_sft")

    grpo = write_config(work / "grpo.yaml", {
        "extends": [str(REPO / "configs" / "stage_3_grpo.yaml"), cpu],
        "model": {"model": str(model)}, "run": {"init_from": str(sft_ckpt), "overwrite": True},
        "custom": {"train_jsonl": str(records), "health_check_samples": 1},
        "tuner": {"train_type": args.tuner, "freeze_llm": False, "freeze_aligner": args.tuner == "lora"},
        "training": {"output_dir": str(work / "grpo"), "max_steps": args.grpo_steps,
                     "learning_rate": args.learning_rate,
                     "per_device_train_batch_size": args.generations, "save_steps": args.grpo_steps,
                     "logging_steps": 5},
        "rlhf": {"num_generations": args.generations, "max_completion_length": 160, "temperature": args.temperature,
                 "beta": args.beta, "reward_funcs": ["grounding_format", "grounding_f1", "grounding_iou"],
                 "reward_weights": [1.0, 1.0, 1.0]},
        "env": ONE_THREAD})
    grpo_s = run(["-m", "src.sft", "--config", str(grpo)], env=ONE_THREAD)
    after = ap50(grpo, (work / "grpo" / "last-checkpoint").resolve(), records, work / "eval_grpo")

    rows = [json.loads(x) for x in (work / "grpo" / "logging.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in rows if "rewards/grounding_f1/mean" in r]
    first, last = steps[:3], steps[-3:]

    def mean(rs: list[dict], key: str) -> float:
        return sum(float(r[key]) for r in rs) / max(len(rs), 1)

    print(f"work directory: {work}")
    print(f"SFT {args.sft_epochs} epochs: {sft_s:.0f} s; GRPO ({args.tuner}, lr {args.learning_rate}, temperature "
          f"{args.temperature}, beta {args.beta}) {args.grpo_steps} steps x {args.generations} completions: "
          f"{grpo_s:.0f} s")
    print(f"reward grounding_f1 (mean of logged steps): first {mean(first, 'rewards/grounding_f1/mean'):.3f}, "
          f"last {mean(last, 'rewards/grounding_f1/mean'):.3f}")
    print(f"{'figure':<28}{'value':>8}{'target':>14}{'ratio':>8}")
    print(f"{'AP50 after SFT (baseline)':<28}{before:>8.3f}{'-':>14}{'1.00':>8}")
    ratio = f"{after / before:.2f}" if before else "-"
    print(f"{'AP50 after SFT + GRPO':<28}{after:>8.3f}{'>= baseline':>14}{ratio:>8}")


if __name__ == "__main__":
    main()
