"""`python -m src.datasets render|stats` on the tiny model through ms-swift's real template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.datasets.validation import load_records
from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow  # each test starts ms-swift's template in a subprocess
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    build_tiny_model(root / "model")
    write_synthetic_dataset(root / "data", n=6)
    train = root / "data" / "train.jsonl"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    rows[0]["objects"][0]["ignore"] = True  # an ignore region among objects: drawn, never answered
    for obj in rows[1]["objects"]:
        obj["ignore"] = True  # only ignore regions: left out of the samples
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = root / "run.yaml"
    path.write_text(
        f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: ./model\n"
        "custom:\n  train_jsonl: data/train.jsonl\n  val_jsonl: data/val.jsonl\n  augment_prob: 1.0\n"
        "  augment: [{op: hflip, p: 1.0}, {op: rotate, p: 1.0, max_degrees: 15}]\n"
        "training:\n  output_dir: out\n")
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "src.datasets", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_render_writes_what_the_model_sees_and_the_augmented_records(config, tmp_path):
    out = tmp_path / "render.jsonl"
    proc = _cli("render", "--config", str(config), "--augment", "--limit", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"their images: {tmp_path / 'render_images'}" in proc.stdout  # every path it wrote is named
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(samples) == 3
    train_jsonl = (config.parent / "data" / "train.jsonl").resolve()
    assert [s["source"] for s in samples] == [f"{train_jsonl}:{line}" for line in (1, 3, 4)]  # 2: all ignored
    for sample in samples:
        assert sample["health_problems"] == []
        assert sample["input_text"].count("<|image_pad|>") == sum(sample["image_tokens"])
        assert sample["target_text"].startswith("[{") and sample["target_text"].rstrip().endswith("<|im_end|>")
    records, problems = load_records(tmp_path / "render.records.jsonl")
    assert problems == []  # augmented geometry stays inside the augmented image, sizes agree
    assert [o.ignore for o in records[0].objects].count(True) == 1  # the ignore region is drawn, marked
    assert len(json.loads(samples[0]["messages"][-1]["content"])) == len(records[0].objects) - 1
    original, _ = load_records(config.parent / "data" / "train.jsonl")
    assert (records[0].width, records[0].height) != (original[0].width, original[0].height)  # rotated: expanded


def test_render_overwrite_removes_only_its_own_earlier_images_once_the_new_render_is_whole(config, tmp_path):
    """`render --overwrite` after a longer render left the earlier samples' images beside the new ones (a folder
    of 3 images for a render of 1); now the images of render's own names it did not write this time go, once the
    new files are whole, and a file of another name stays."""
    out, images = tmp_path / "render.jsonl", tmp_path / "render_images"
    assert _cli("render", "--config", str(config), "--limit", "3", "--out", str(out)).returncode == 0
    assert sorted(p.name for p in images.iterdir()) == ["000000_0.png", "000001_0.png", "000002_0.png"]
    (images / "my_notes.txt").write_text("mine")
    (images / "000001_0.png.keep").write_text("mine too")
    proc = _cli("render", "--config", str(config), "--limit", "1", "--out", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in images.iterdir()) == ["000000_0.png", "000001_0.png.keep", "my_notes.txt"]
    assert len(out.read_text().splitlines()) == 1
    drawn = [json.loads(line)["images"][0] for line in (tmp_path / "render.records.jsonl").read_text().splitlines()]
    assert drawn == [str(images / "000000_0.png")]
    assert not list(tmp_path.glob("*.partial")) and not list(images.glob("*.partial"))


def test_render_refuses_to_overwrite_and_reports_config_errors(config, tmp_path):
    out = tmp_path / "render.jsonl"
    out.write_text("earlier\n")
    proc = _cli("render", "--config", str(config), "--out", str(out))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {config}\ncustom:\n  emit_norm: norm500\n")
    proc = _cli("render", "--config", str(bad), "--out", str(tmp_path / "other.jsonl"))
    assert proc.returncode == 2 and "norm500" in proc.stderr


def test_stats_reports_lengths_and_writes_histograms(config, tmp_path):
    proc = _cli("stats", "--config", str(config), "--out", str(tmp_path / "stats"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    train, _ = load_records(config.parent / "data" / "train.jsonl")
    assert stats["records"] == len(train) - 1 and stats["records_all_ignored"] == 1
    kept = [r for r in train if not all(o.ignore for o in r.objects)]
    assert stats["objects"] == sum(not o.ignore for r in kept for o in r.objects)
    assert stats["ignore_regions"] == 1
    assert "ignore regions: 1; records left out, all objects ignored: 1" in proc.stdout
    assert 0 < stats["token_length"]["min"] <= stats["token_length"]["max"]
    assert all(Path(p).is_file() for p in stats["histograms"])
