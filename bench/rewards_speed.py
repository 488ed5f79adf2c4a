"""Benchmark: seconds the six grounding rewards (src/rewards/grounding.py) take on one hostile completion.

A model in GRPO often generates long repeating output, and a reward call that takes seconds stalls the step on
every rank. Each case is one completion of up to `--tokens` tokens (counted by Qwen's own tokenizer,
src/tiny_model/tokenizer.py) in the answer format, against a dense truth of 50 objects of every kind with two
ignore regions on the 0..1000 grid: one box entry repeated; one quad entry repeated; quads drifting a few px at
a time (repeats that are not equal); one simple polygon of as many vertices as fit; one outline crossing itself
of as many vertices as fit (past `MAX_REPAIRED_VERTICES`: a malformed entry); outlines of that many vertices crossing
themselves (each repaired), drifting; boxes with a distinct label each; a realistic answer of 50 objects.
Per case it prints the rewards' time (every reward once, caches cleared first, parsing included) and the time of
the straightforward computation (tests/support/reward_reference.py: every pair compared one by one, nothing
shared between the rewards) measured in the same process, their ratio, and the target: every reward of a
case under 1 s in all. It prints; it never fails on a figure.

Run: `.venv/bin/python bench/rewards_speed.py [--tokens 8192] [--cases a,b] [--no-baseline]`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src.datasets.kinds import base as kind_base  # noqa: E402
from src.datasets.objects import GeoObject  # noqa: E402
from src.rewards import grounding  # noqa: E402
from src.rewards.grounding import MAX_REPAIRED_VERTICES, REWARDS, GroundTruth, truth_from_answer  # noqa: E402
from src.tiny_model.tokenizer import build_tokenizer  # noqa: E402
from tests.support import reward_reference  # noqa: E402

TARGET_S = 1.0
LABELS = ("cat", "dog", "car", "sign", "tree")


def ring(n: int, cx: float = 500, cy: float = 500, r: float = 300, crossing: bool = False) -> list[int]:
    """An outline of `n` vertices around (cx, cy); `crossing`: vertices visited out of order (a scribble)."""
    order = list(range(n))
    if crossing:
        random.Random(n).shuffle(order)
    return [round(v) for k in order for v in (cx + r * (1 + 0.15 * math.sin(7 * 2 * math.pi * k / n)) * math.cos(
        2 * math.pi * k / n), cy + r * (1 + 0.15 * math.sin(7 * 2 * math.pi * k / n)) * math.sin(2 * math.pi * k / n))]


def dense_truth() -> GroundTruth:
    rng = random.Random(0)
    entries = []
    for i in range(50):
        x, y, w, h = rng.randint(0, 850), rng.randint(0, 850), rng.randint(20, 150), rng.randint(20, 150)
        shape = [{"bbox_2d": [x, y, x + w, y + h]}, {"quad": [x, y, x + w, y + 5, x + w - 5, y + h, x, y + h - 5]},
                 {"polygon": ring(12, x + w / 2, y + h / 2, min(w, h) / 2.5)}, {"point_2d": [x, y]}][i % 4]
        entries.append({**shape, "label": LABELS[i % len(LABELS)]})
    ignore = (GeoObject("bbox_2d", (600.0, 600.0, 900.0, 900.0), "cat", ignore=True),
              GeoObject("quad", (0.0, 700.0, 300.0, 700.0, 300.0, 1000.0, 0.0, 1000.0), "", ignore=True))
    return truth_from_answer(json.dumps(entries), ignore)


def cases(count_tokens, budget: int) -> dict[str, str]:  # noqa: ANN001
    def fill(entry) -> str:  # noqa: ANN001 - entry(i) -> dict
        lo, hi = 1, budget
        while lo < hi:  # the most entries that fit the budget
            mid = (lo + hi + 1) // 2
            if count_tokens(json.dumps([entry(i) for i in range(mid)])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return json.dumps([entry(i) for i in range(lo)])

    def one_outline(crossing: bool) -> str:  # the most vertices that fit the budget
        lo, hi = 3, budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(json.dumps([{"polygon": ring(mid, crossing=crossing), "label": "cat"}])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return json.dumps([{"polygon": ring(lo, crossing=crossing), "label": "cat"}])

    rng = random.Random(1)
    realistic = []
    for i in range(50):
        x, y = rng.randint(0, 850), rng.randint(0, 850)
        realistic.append({"bbox_2d": [x, y, x + rng.randint(10, 150), y + rng.randint(10, 150)],
                          "label": LABELS[i % len(LABELS)]})
    return {
        "a boxes repeated": fill(lambda i: {"bbox_2d": [100, 100, 300, 300], "label": "cat"}),
        "b quads repeated": fill(lambda i: {"quad": [500, 500, 700, 500, 700, 700, 500, 700], "label": "sign"}),
        "b2 quads drifting": fill(lambda i: {"quad": [500 + i % 23, 500, 700, 500 + i % 7, 700, 700, 500, 700],
                                             "label": "sign"}),
        "c one simple polygon": one_outline(False),
        "c2 one scribble": one_outline(True),
        "c3 bound-vertex scribbles": fill(lambda i: {"polygon": ring(MAX_REPAIRED_VERTICES, 500 + i % 17, 500, 150,
                                                                     crossing=True),
                                                  "label": "cat"}),
        "d distinct labels": fill(lambda i: {"bbox_2d": [100 + i % 50, 100, 300, 300], "label": f"thing {i}"}),
        "e realistic 50": json.dumps(realistic),
    }


def timed(fn) -> float:  # noqa: ANN001
    grounding._read.cache_clear()
    grounding._scoring_cached.cache_clear()
    kind_base._repaired.cache_clear()  # outlines repaired for an earlier run are not this one's work
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours(completion: str, truth: GroundTruth, values: dict[str, float], seconds: dict[str, float]) -> None:
    """Every reward of `completion` into `values`, the time each took into `seconds`."""
    for reward, fn in REWARDS.items():
        start = time.perf_counter()
        values[reward] = fn(completion, truth)
        seconds[reward] = time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192, help="the completion's length in tokens")
    parser.add_argument("--cases", default="", help="comma-separated case ids (a, b2, c3...) to run; all by default")
    parser.add_argument("--no-baseline", action="store_true", help="skip the straightforward computation")
    args = parser.parse_args()
    tokenizer = build_tokenizer()

    def count_tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    truth = dense_truth()
    wanted = set(filter(None, args.cases.split(",")))
    worst = 0.0
    for name, completion in cases(count_tokens, args.tokens).items():
        if wanted and name.split()[0] not in wanted:
            continue
        values: dict[str, float] = {}
        per_reward: dict[str, float] = {}
        seconds = timed(lambda text=completion, out=values, each=per_reward: ours(text, truth, out, each))
        worst = max(worst, seconds)
        entries = len(json.loads(completion))
        line = (f"{name:<24} {entries:5d} entries {count_tokens(completion):6d} tokens | rewards {seconds:7.3f} s "
                f"(target < {TARGET_S:.0f} s)")
        if not args.no_baseline:
            reference: dict[str, float] = {}
            baseline = timed(lambda text=completion, out=reference: out.update(reward_reference.rewards(text, truth)))
            same = all(abs(values[k] - reference[k]) <= 1e-12 for k in values)
            line += f" | straightforward {baseline:8.3f} s | ratio {baseline / seconds:7.1f}x | equal: {same}"
        print(line, flush=True)
        print("    " + ", ".join(f"{k.removeprefix('grounding_')} {v * 1000:.0f} ms" for k, v in per_reward.items()))
    print(f"worst case: {worst:.3f} s for every reward of one {args.tokens}-token completion; "
          f"target < {TARGET_S:.0f} s; ratio target / worst {TARGET_S / worst:.1f}")


if __name__ == "__main__":
    main()
