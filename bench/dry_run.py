"""Benchmark: `python -m src.sft --dry-run` on a config whose JSONL holds 10,000 records.

Prints the wall time of the dry run (budget: 1.5 s) and its ratio to a baseline measured in the
same process: starting Python and importing only yaml/numpy/PIL (`python -c "import yaml, numpy,
PIL.Image"`), i.e. the floor any dry run pays. Run: `.venv/bin/python bench/dry_run.py [--records N]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def write_fixture(root: Path, n: int) -> Path:
    """A tiny model stand-in, one image, `n` records pointing at it, and a config using them."""
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    Image.new("RGB", (64, 48), (200, 200, 200)).save(root / "img.png")
    record = {"images": ["img.png"], "objects": [{"bbox_2d": [4, 4, 30, 20], "desc": "box"},
                                                 {"quad": [32, 4, 60, 4, 60, 40, 32, 40], "desc": "tag"}],
              "width": 64, "height": 48}
    with (root / "train.jsonl").open("w") as fh:
        for _ in range(n):
            fh.write(json.dumps(record) + "\n")
    config = root / "config.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: ./model\n"
                      "custom:\n  train_jsonl: ./train.jsonl\ntraining:\n  output_dir: ./out\n")
    return config


def timed(argv: list[str], repeats: int) -> float:
    """Best wall time of `repeats` runs of `argv` (seconds); raises if a run fails."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_fixture(Path(tmp), args.records)
        baseline = timed([sys.executable, "-c", "import yaml, numpy, PIL.Image"], args.repeats)
        dry_run = timed([sys.executable, "-m", "src.sft", "--config", str(config), "--dry-run"], args.repeats)
    print(f"records:            {args.records}")
    print(f"baseline (imports): {baseline:.3f} s")
    print(f"dry run:            {dry_run:.3f} s  (budget 1.5 s: {'within' if dry_run <= 1.5 else 'OVER'})")
    print(f"ratio dry run / baseline: {dry_run / baseline:.2f}x")


if __name__ == "__main__":
    main()
