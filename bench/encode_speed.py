"""Benchmark: samples/s of the project's encode path against ms-swift encoding the equivalent rows.

Ours: `GroundingRowsDataset[i]` (records -> row, images through the project's loader) then the
template's `encode`. Baseline, same process, same template: `encode` on the same rows prepared the
plain ms-swift way (image paths, ms-swift's own loader). Prints both rates and their ratio (target:
ours within 5 %). Run: `.venv/bin/python bench/encode_speed.py [--n 64] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from src.config.offline import apply_offline_env
from src.config.prompts import get_prompt_scheme
from src.datasets.builders import make_builder
from src.datasets.rows import GroundingRowsDataset
from src.datasets.synth import write_synthetic_dataset
from src.datasets.validation import load_records
from src.tiny_model import build_tiny_model


def rate(fn, n: int, repeats: int) -> float:
    """Best samples/s of `fn(i)` over `repeats` passes of `n` samples."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    apply_offline_env()
    from swift import get_processor, get_template

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model")
        write_synthetic_dataset(root / "data", n=args.n, val_fraction=0.0)
        records, _ = load_records(root / "data" / "train.jsonl")
        template = get_template(get_processor(str(model), model_type="qwen3_vl"), template_type="qwen3_vl")
        template.set_mode("train")
        builder = make_builder(get_prompt_scheme("dense"), "norm1000", "reading")
        built = [builder.build([r]) for r in records]  # as src/datasets/plan.py does before training
        ours = GroundingRowsDataset([([r], {}) for r in records], builder, rows=built)
        plain_rows = [{"messages": row["messages"], "images": row["images"]} for row in built]
        n = len(records)
        rate(lambda i: template.encode(plain_rows[i]), n, 1)  # warm-up
        baseline = rate(lambda i: template.encode(plain_rows[i]), n, args.repeats)
        project = rate(lambda i: template.encode(ours[i]), n, args.repeats)
    print(f"samples: {n}")
    print(f"ms-swift rows (baseline): {baseline:8.1f} samples/s")
    print(f"project path:             {project:8.1f} samples/s")
    print(f"ratio project / baseline: {project / baseline:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
