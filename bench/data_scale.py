"""Benchmark: the data path at scale, on dense records that look real (issue 11's targets).

Generates N records of 6 to 50 objects (boxes and quads, unicode labels) over a pool of images in mixed
formats (small PNGs, EXIF-rotated JPEGs, large JPEGs, tiny images), then prints, each beside its target:
- `--dry-run` of 10,000 records, first run and repeat (target <= 1.0 s), against the floor every dry run
  pays (Python + yaml/numpy/PIL imports, measured in the same process) as a ratio;
- validation of N records (`python -m src.datasets validate`-equivalent, image headers read), first pass
  and unchanged (targets for 1,000,000: <= 60 s and <= 5 s), as records/s;
- resident memory a process gains per record by planning N records from the stored verdict (target
  <= 0.5 KB per record), in a fresh process, and after it has read every record's columns once (the
  memory-mapped columns then resident: page cache that the ranks of a node share).

Run: `.venv/bin/python bench/data_scale.py [--records 100000] [--images 2000] [--work DIR]`. It prints;
it never fails on a target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LABELS = ["car", "person", "traffic light", "text: EXIT", "größer Hund", "标签", "sign ✓", "window", "tree",
          "bicycle", "text: 出口", "door"]


def write_images(folder: Path, n: int, seed: int = 0) -> list[tuple[str, int, int]]:
    """`n` images in mixed formats; (relative path, displayed width, displayed height) of each."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:  # small PNG
            w, h, name = rng.randint(200, 640), rng.randint(200, 480), f"img{i:06d}.png"
            Image.new("RGB", (w, h), (i % 255, 90, 160)).save(folder / name)
        elif kind == 1:  # JPEG stored sideways, EXIF orientation 6 (displayed rotated)
            w, h, name = rng.randint(300, 800), rng.randint(200, 600), f"img{i:06d}.jpg"
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.new("RGB", (h, w), (30, i % 255, 60)).save(folder / name, exif=exif.tobytes(), quality=70)
        elif kind == 2:  # large JPEG
            w, h, name = 2048, 1536, f"img{i:06d}.jpg"
            Image.new("RGB", (w, h), (200, 200, i % 255)).save(folder / name, quality=60)
        else:  # tiny image
            w, h, name = rng.randint(24, 64), rng.randint(24, 64), f"img{i:06d}.png"
            Image.new("RGB", (w, h), (10, 10, 10)).save(folder / name)
        out.append((f"images/{name}", w, h))
    return out


def dense_record(rng: random.Random, image: tuple[str, int, int], objects_range: tuple[int, int] = (6, 50)) -> dict:
    """A record of 6 to 50 objects (`objects_range`) inside the image: boxes and quads with unicode labels."""
    path, w, h = image
    objects = []
    for _ in range(rng.randint(*objects_range)):
        x1, y1 = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
        x2, y2 = min(w, x1 + rng.uniform(2, w * 0.2)), min(h, y1 + rng.uniform(2, h * 0.2))
        label = rng.choice(LABELS)
        if rng.random() < 0.25:
            objects.append({"quad": [round(v, 1) for v in (x1, y1, x2, y1, x2, y2, x1, y2)], "desc": label})
        else:
            objects.append({"bbox_2d": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)], "desc": label})
    return {"images": [path], "objects": objects, "width": w, "height": h}


def write_records(path: Path, images: list[tuple[str, int, int]], n: int, seed: int = 0,
                  objects_range: tuple[int, int] = (6, 50)) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            record = dense_record(rng, images[i % len(images)], objects_range)
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records for the validation figures")
    parser.add_argument("--images", type=int, default=2_000, help="distinct image files the records use")
    parser.add_argument("--work", type=Path, help="keep the generated data here (default: a temporary folder)")
    parser.add_argument("--objects", type=int, nargs=2, default=(6, 50), metavar=("MIN", "MAX"),
                        help="objects per record (default 6 50; the issue's equal-length records: 8 8)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="data_scale_"))
    (work / "data").mkdir(parents=True, exist_ok=True)
    images = write_images(work / "data" / "images", args.images)
    small = write_records(work / "data" / "dense10k.jsonl", images, 10_000, objects_range=tuple(args.objects))
    large = write_records(work / "data" / f"dense{args.records}.jsonl", images, args.records, seed=1,
                          objects_range=tuple(args.objects))
    objects = sum(len(json.loads(line)["objects"]) for line in small.open(encoding="utf-8"))
    (work / "model").mkdir(exist_ok=True)
    (work / "model" / "config.json").write_text("{}")
    config = work / "dry_run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: ./model\n"
                      f"custom:\n  train_jsonl: {small}\ntraining:\n  output_dir: ./out\n")
    env = {**os.environ, "GROUNDING_CACHE_DIR": str(work / "verdicts")}
    py = sys.executable
    floor = min(timed([py, "-c", "import yaml, numpy, PIL.Image"], env) for _ in range(3))
    dry = [py, "-m", "src.sft", "--config", str(config), "--dry-run"]
    first = timed([*dry, "--revalidate"], env)
    repeat = min(timed(dry, env) for _ in range(3))

    from src.datasets.loading import validated_records
    from src.datasets.verdicts import VerdictStore

    store = VerdictStore(work / "verdicts")
    start = time.perf_counter()
    records, problems, _ = validated_records(large, store=store, revalidate=True)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    validated_records(large, store=store)
    warm = time.perf_counter() - start
    scale = 1_000_000 / args.records

    print(f"data: {work / 'data'} ({args.images} images: PNG, EXIF JPEG, 2048x1536 JPEG, tiny; "
          f"{objects / 10_000:.1f} objects per record)")
    print(f"{'figure':<44}{'measured':>12}{'target':>12}{'ratio':>10}")
    print(f"{'import floor (python + yaml/numpy/PIL)':<44}{floor:>11.2f}s{'-':>12}{'1.00x':>10}")
    print(f"{'dry run, 10k records, first':<44}{first:>11.2f}s{'<= 1.0 s':>12}{first / floor:>9.2f}x")
    print(f"{'dry run, 10k records, unchanged':<44}{repeat:>11.2f}s{'<= 1.0 s':>12}{repeat / floor:>9.2f}x")
    # the rate after a space: a wide one must not read as a negative number glued to the '-'
    cold_rate, warm_rate = f"{args.records / cold:,.0f}/s", f"{args.records / warm:,.0f}/s"
    print(f"{f'validate {args.records} records, first':<44}{cold:>11.2f}s{'-':>12} {cold_rate:>9}")
    print(f"{'  -> 1M records, first (extrapolated)':<44}{cold * scale:>11.1f}s{'<= 60 s':>12}")
    print(f"{f'validate {args.records} records, unchanged':<44}{warm:>11.2f}s{'-':>12} {warm_rate:>9}")
    print(f"{'  -> 1M records, unchanged (extrapolated)':<44}{warm * scale:>11.1f}s{'<= 5 s':>12}")
    print(f"valid records {len(records)}, problems {len(problems)}")
    large_config = work / "plan_memory.yaml"
    large_config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: ./model\n"
                            f"custom:\n  train_jsonl: {large}\ntraining:\n  output_dir: ./out\n")
    # Planned from the stored verdict (columns memory-mapped), then every record's columns read once, as an
    # epoch of training does: the second figure is the page cache the ranks of a node share.
    probe = ("import psutil, sys, numpy as np; from src.config import load_project_config;"
             "from src.datasets.plan import plan_data; from src.datasets.verdicts import VerdictStore;"
             "cfg = load_project_config(sys.argv[1]); rss = lambda: psutil.Process().memory_info().rss;"
             "before = rss(); plan = plan_data(cfg, store=VerdictStore()); planned = rss() - before;"
             "records = plan.splits[0].records; [np.asarray(c).sum() for c in records.columns.values()];"
             "print(planned, rss() - before, len(plan.train_samples))")
    out = subprocess.run([py, "-c", probe, str(large_config)], cwd=REPO, check=True, capture_output=True, text=True,
                         env=env).stdout.split()
    per_record, read_all = int(out[0]) / int(out[2]), int(out[1]) / int(out[2])
    print(f"{f'memory per record, {args.records} planned':<44}{per_record / 1024:>10.2f}KB{'<= 0.5 KB':>12}")
    print(f"{'  ... every record read (shared page cache)':<44}{read_all / 1024:>10.2f}KB{'<= 0.5 KB':>12}")


if __name__ == "__main__":
    main()
