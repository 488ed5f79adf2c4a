"""Benchmark (not a test): what the answers' log-probabilities cost at inference.

`src.infer` and the evaluation during training ask ms-swift's transformers engine for each generated
token's log-probability (the objects' scores, by which AP ranks them). ms-swift 4.6 sorts the whole
vocabulary per token for that; `src/inference/fast_logprobs.py` takes the top entries instead. This
generates greedy answers of `--tokens` tokens for `--images` images in mixed formats (PNG, an EXIF-turned
JPEG, a 2048x1536 JPEG, a tiny image) on the tiny model, three ways in one process: without
log-probabilities (the floor), with ms-swift's own, and with the project's. The answers and values are
compared too.

Run: `.venv/bin/python bench/infer_logprobs.py [--images 8] [--tokens 256] [--arch qwen3_vl]`.
Target: tokens/s with log-probabilities >= 0.8x of those without. It prints; it never fails on a figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--arch", default="qwen3_vl")
    args = parser.parse_args()

    from src.config.offline import apply_offline_env

    apply_offline_env()
    os.environ.setdefault("IMAGE_MAX_TOKEN_NUM", "64")  # configs/cpu.yaml's budget
    from data_scale import write_images
    from swift import InferRequest, RequestConfig, TransformersEngine

    from src.config.prompts import get_prompt_scheme
    from src.inference.fast_logprobs import install
    from src.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="infer_logprobs-"))
    build_tiny_model(work / "model", arch=args.arch)
    images = write_images(work / "images", args.images)
    scheme = get_prompt_scheme("dense")
    requests = [InferRequest(messages=[{"role": "system", "content": scheme.system},
                                       {"role": "user", "content": f"<image>{scheme.user}"}],
                             images=[str(work / "images" / Path(name).name)]) for name, _, _ in images]
    engine = TransformersEngine(str(work / "model"), model_type=args.arch, attn_impl="sdpa")

    def run(logprobs: bool) -> tuple[float, list]:
        config = RequestConfig(max_tokens=args.tokens, temperature=0.0, logprobs=logprobs)
        start = time.perf_counter()
        responses = engine.infer(requests, config, use_tqdm=False)
        seconds = time.perf_counter() - start
        return sum(r.usage.completion_tokens for r in responses) / seconds, responses

    run(False)  # warm-up
    floor, plain = run(False)
    swift_own, theirs = run(True)
    install()
    ours_rate, ours = run(True)
    same_text = all(a.choices[0].message.content == b.choices[0].message.content for a, b in zip(plain, ours,
                                                                                                  strict=True))
    drift = max(abs(x["logprob"] - y["logprob"]) for a, b in zip(theirs, ours, strict=True)
                for x, y in zip(a.choices[0].logprobs["content"], b.choices[0].logprobs["content"], strict=True))
    print(f"{args.images} images, {args.tokens} tokens each, tiny {args.arch}, CPU threads {os.cpu_count()}")
    print(f"{'figure':<48}{'tokens/s':>10}{'target':>10}{'vs floor':>10}")
    print(f"{'generate, no log-probabilities (floor)':<48}{floor:>10.1f}{'-':>10}{'1.00x':>10}")
    print(f"{'generate + log-probabilities, ms-swift 4.6':<48}{swift_own:>10.1f}{'-':>10}{swift_own / floor:>9.2f}x")
    print(f"{'generate + log-probabilities, fast_logprobs':<48}{ours_rate:>10.1f}{'>= 0.8x':>10}"
          f"{ours_rate / floor:>9.2f}x")
    print(f"speed-up over ms-swift's own: {ours_rate / swift_own:.2f}x; same answers: {same_text}; "
          f"largest log-probability difference: {drift:.2e}")


if __name__ == "__main__":
    main()
