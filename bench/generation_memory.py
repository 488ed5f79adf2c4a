"""Benchmark (not a test): the memory generation with log-probabilities holds (`src.infer`, the evaluation
during training).

ms-swift 4.6 asks transformers' `generate` for `output_logits`, which keeps an fp32 copy of the full-vocabulary
logits of every generated token until the batch is done: steps x batch x vocab x 4 bytes (Qwen's 151,936
entries: 155 MB per 256 tokens of one answer; `src.infer`'s default batch of 64 answers of 2,048 tokens would
hold 80 GB). `src/inference/fast_logprobs.py` keeps each step's top entries and the generated token's value
instead (at most two full rows). This answers `--batch` questions greedily, `--tokens` tokens each, on the tiny
Qwen3-VL (Qwen's vocabulary) three ways, each in a fresh process: without log-probabilities (the floor), with
ms-swift's kept logits, and with the project's; it prints each one's peak resident memory above what the
process held before generating, and the same answers and values are checked.

Run: `.venv/bin/python bench/generation_memory.py [--batch 16] [--tokens 256]`.
Target: with log-probabilities, at most the floor plus 10% of the logits ms-swift keeps. It prints; it never
fails on a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

MODES = {"floor": "generate, no log-probabilities (floor)",
         "swift": "generate + log-probabilities, ms-swift 4.6",
         "ours": "generate + log-probabilities, fast_logprobs"}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(mode: str, work: Path, batch: int, tokens: int, arch: str) -> dict:
    """In this process: generate once in `mode`; the peak resident memory above the start, answers, values."""
    from src.config.offline import apply_offline_env

    apply_offline_env()
    os.environ.setdefault("IMAGE_MAX_TOKEN_NUM", "64")  # configs/cpu.yaml's budget
    import torch
    from swift import InferRequest, RequestConfig, TransformersEngine

    from src.config.prompts import get_prompt_scheme
    from src.inference.fast_logprobs import install

    if mode == "ours":
        install()
    scheme = get_prompt_scheme("dense")
    images = sorted((work / "images").iterdir())[:batch]
    requests = [InferRequest(messages=[{"role": "system", "content": scheme.system},
                                       {"role": "user", "content": f"<image>{scheme.user}"}], images=[str(image)])
                for image in images]
    engine = TransformersEngine(str(work / "model"), model_type=arch, attn_impl="sdpa", torch_dtype=torch.float32,
                                max_batch_size=batch)
    config = RequestConfig(max_tokens=tokens, temperature=0.0, logprobs=mode != "floor")
    engine.infer(requests[:2], RequestConfig(max_tokens=4, temperature=0.0, logprobs=mode != "floor"),
                 use_tqdm=False)  # warm-up: the allocator's and the kernels' first use out of the figure
    before = max(_rss_bytes(), _peak_rss_bytes())
    responses = engine.infer(requests, config, use_tqdm=False)
    content = [r.choices[0].logprobs["content"] if r.choices[0].logprobs else [] for r in responses]
    return {"peak_above_start": _peak_rss_bytes() - before, "vocab": engine.model.config.get_text_config().vocab_size,
            "steps": max(r.usage.completion_tokens for r in responses),
            "answers": [r.choices[0].message.content for r in responses],
            "logprobs": [[step["logprob"] for step in answer] for answer in content]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--arch", default="qwen3_vl")
    parser.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)  # one measurement, in a child
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.work, args.batch, args.tokens, args.arch)))
        return

    from data_scale import write_images

    from src.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="generation_memory-"))
    build_tiny_model(work / "model", arch=args.arch)
    write_images(work / "images", args.batch)
    results = {}
    for mode in MODES:
        child = subprocess.run([sys.executable, __file__, "--mode", mode, "--work", str(work), "--batch",
                                str(args.batch), "--tokens", str(args.tokens), "--arch", args.arch],
                               capture_output=True, text=True, check=True)
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    floor, swift, ours = results["floor"], results["swift"], results["ours"]
    kept = swift["steps"] * args.batch * swift["vocab"] * 4
    drift = max((abs(a - b) for x, y in zip(swift["logprobs"], ours["logprobs"], strict=True)
                 for a, b in zip(x, y, strict=True)), default=0.0)
    print(f"{args.batch} questions, up to {args.tokens} tokens each, greedy, tiny {args.arch} (vocabulary "
          f"{swift['vocab']:,}), float32; the logits ms-swift keeps: {kept / 1e9:.2f} GB")
    print(f"{'figure':<48}{'peak above start':>18}{'target':>12}{'vs ms-swift':>13}")
    target = floor["peak_above_start"] + 0.1 * kept
    for mode, label in MODES.items():
        peak = results[mode]["peak_above_start"]
        print(f"{label:<48}{peak / 1e9:>15.2f} GB{(f'<= {target / 1e9:.2f}' if mode == 'ours' else '-'):>12}"
              f"{peak / max(swift['peak_above_start'], 1):>12.2f}x")
    same = swift["answers"] == ours["answers"] == floor["answers"]
    print(f"met: {ours['peak_above_start'] <= target}; same answers: {same}; largest log-probability "
          f"difference: {drift:.2e}")


if __name__ == "__main__":
    main()
