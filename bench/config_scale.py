"""Benchmark: a config's cost grows linearly with its keys (issue 21: 160,000 `env:` keys took 60 s when each
merged key scanned every origin recorded so far).

Loads a config tree whose run file sets N `env:` keys, for a small N (the baseline) and a large one, in this
process, and prints the time per key of each and their ratio (target: <= 2, i.e. linear; a quadratic merge
gives about N_large / N_small). Also prints the largest N that fits the 1 MiB config limit.

Run: `.venv/bin/python bench/config_scale.py [--small 2000] [--large 40000]`. It prints; it never fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.config import load_project_config  # noqa: E402
from src.config.yaml_io import MAX_CONFIG_BYTES  # noqa: E402
from tests.config_helpers import make_data, make_fake_model, write_config_tree  # noqa: E402


def _seconds_per_key(root: Path, keys: int, data: Path, model: Path) -> float:
    body = "env:\n" + "".join(f"  KEY_{i}: value_{i}\n" for i in range(keys))
    tree = write_config_tree(root / f"n{keys}", body, data_dir=data, model=model)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        load_project_config(tree.config)
        best = min(best, time.perf_counter() - start)
    return best / keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000, help="env keys of the baseline config")
    parser.add_argument("--large", type=int, default=40000, help="env keys of the large config")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="config_scale-") as tmp:
        root = Path(tmp)
        data, model = root / "data", make_fake_model(root / "model")
        make_data(data)
        small = _seconds_per_key(root, args.small, data, model)
        large = _seconds_per_key(root, args.large, data, model)
    line = len("  KEY_99999: value_99999\n")
    print(f"env keys: {args.small:,} -> {small * 1e6:.1f} us/key; {args.large:,} -> {large * 1e6:.1f} us/key; "
          f"ratio {large / small:.2f} (target <= 2: linear; quadratic would be ~{args.large / args.small:.0f})")
    print(f"largest env that fits the {MAX_CONFIG_BYTES:,}-byte config limit: about {MAX_CONFIG_BYTES // line:,} keys "
          f"({MAX_CONFIG_BYTES // line * large:.1f} s to load at the large rate)")


if __name__ == "__main__":
    main()
