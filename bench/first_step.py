"""Benchmark: time to the first training step and peak memory on N dense records, against ms-swift's own
loader of the same rows (issue 11, item 4).

The project's run (`python -m src.sft`, stage-2 recipe on the tiny model, CPU, `max_steps: 1`) is timed
twice: a first run (every record validated) and a repeat (the stored verdict reused). The baseline is
what a user would run instead: the same rows, built once by the project's builder, written as a plain
`messages` + `images` JSONL and trained by `swift sft` with ms-swift's lazy loader. Each figure is the
whole command's wall time (start-up, loading, one step) and its peak resident memory.

Run: `.venv/bin/python bench/first_step.py [--records 100000] [--objects 8 8] [--work DIR]`. Targets:
<= 20 s (first) and <= 15 s (repeat) for 100,000 records of 8 objects, <= 45 s (first) for 1,000,000. It
prints; it never fails on one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from data_scale import write_images, write_records  # noqa: E402

SWIFT = str(Path(sys.executable).with_name("swift"))
CPU_FLAGS = {"torch_dtype": "float32", "use_cpu": True, "bf16": False, "fp16": False, "attn_impl": "sdpa"}


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak resident GiB of the process and its children) of a command that must succeed."""
    peak = [0]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def poll() -> None:
        try:
            parent = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
                peak[0] = max(peak[0], rss)
                time.sleep(0.2)
        except psutil.Error:
            pass

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed (exit {proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - started, peak[0] / 2**30


def write_baseline_rows(config: Path, out: Path) -> Path:
    """The project's rows for the config's training records, as a plain ms-swift JSONL (messages + images)."""
    from src.config import load_project_config
    from src.datasets.plan import plan_data

    plan = plan_data(load_project_config(config))
    with out.open("w", encoding="utf-8") as fh:
        for records, focus in plan.train_samples:
            row = plan.builder.build(records, **focus)
            fh.write(json.dumps({"messages": row["messages"], "images": row["images"]}, ensure_ascii=False) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--objects", type=int, nargs=2, default=(8, 8), metavar=("MIN", "MAX"))
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="first_step_"))).resolve()
    (work / "data").mkdir(parents=True, exist_ok=True)
    from src.tiny_model import build_tiny_model

    if not (work / "model" / "config.json").is_file():
        build_tiny_model(work / "model")
    images = write_images(work / "data" / "images", args.images)
    data = write_records(work / "data" / "train.jsonl", images, args.records, objects_range=tuple(args.objects))
    env = {**os.environ, "GROUNDING_CACHE_DIR": str(work / "verdicts")}
    common = {"max_steps": 1, "logging_steps": 1, "save_strategy": "no", "eval_strategy": "no", "report_to": [],
              "dataloader_num_workers": 0}

    def project_config(name: str) -> Path:
        config = {"extends": [str(REPO / "configs" / "stage_2_llm_lora.yaml"), str(REPO / "configs" / "cpu.yaml")],
                  "model": {"model": str(work / "model")}, "custom": {"train_jsonl": str(data)},
                  "training": {"output_dir": str(work / name), **common}, "run": {"overwrite": True}}
        path = work / f"{name}.yaml"
        path.write_text(json.dumps(config))
        return path

    first = run_measured([sys.executable, "-m", "src.sft", "--config", str(project_config("first")), "--revalidate"],
                         env)
    repeat = run_measured([sys.executable, "-m", "src.sft", "--config", str(project_config("repeat"))], env)
    rows = write_baseline_rows(project_config("rows"), work / "data" / "rows.jsonl")
    flags = {**CPU_FLAGS, **common, "model": str(work / "model"), "model_type": "qwen3_vl", "template": "qwen3_vl",
             "dataset": str(rows), "output_dir": str(work / "swift_baseline"), "check_model": False,
             "tuner_type": "lora", "lazy_tokenize": True, "add_version": False, "report_to": "none"}
    argv = [SWIFT, "sft"]
    for key, value in flags.items():
        argv += [f"--{key}", json.dumps(value) if isinstance(value, bool) else str(value)]
    baseline = run_measured(argv, {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                   "IMAGE_MAX_TOKEN_NUM": "64"})

    print(f"records: {args.records} of {args.objects[0]}-{args.objects[1]} objects, {args.images} images, tiny model, "
          f"CPU ({os.cpu_count()} cores)")
    print(f"{'run':<40}{'to first step':>14}{'peak RSS':>11}{'target':>10}{'vs swift':>10}")
    for name, (wall, rss), target in (("ms-swift sft, plain rows (baseline)", baseline, "-"),
                                      ("project, first run", first,
                                       "<= 45 s" if args.records >= 1_000_000 else "<= 20 s"),
                                      ("project, repeat (stored verdict)", repeat, "<= 15 s")):
        print(f"{name:<40}{wall:>13.1f}s{rss:>9.2f}GB{target:>10}{wall / baseline[0]:>9.2f}x")


if __name__ == "__main__":
    main()
