"""The pre-encoded cache: built once with ms-swift's cached-dataset format, trained on, refused when stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _py(*argv, cwd=REPO):
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cache_is_built_trained_on_and_refused_once_stale(tmp_path):
    build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=6)
    base = tmp_path / "base.yaml"
    base.write_text(f"extends: [{REPO / 'configs' / 'stage_2_llm_lora.yaml'}, {REPO / 'configs' / 'cpu.yaml'}]\n"
                    "model:\n  model: ./model\ncustom:\n  train_jsonl: data/train.jsonl\n  val_jsonl: data/val.jsonl\n"
                    "training:\n  output_dir: ./out\n  max_steps: 2\n  eval_strategy: 'no'\n")
    built = _py("-m", "src.datasets", "cache", "--config", str(base), "--out", str(tmp_path / "cache"))
    assert built.returncode == 0, built.stderr[-3000:]
    assert "cached 5 train and 1 val rows" in built.stdout  # synth: 6 images, 20 % for val

    cached = tmp_path / "cached.yaml"
    cached.write_text("extends: base.yaml\ncustom:\n  cached_dataset: ./cache\ntraining:\n  output_dir: ./cached\n")
    run = _py("-m", "src.sft", "--config", str(cached))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "lazy_tokenize = False" in run.stdout
    assert f"cached_dataset = ['{tmp_path / 'cache' / 'train'}']" in run.stdout
    assert (tmp_path / "cached" / "checkpoint-2" / "adapter_model.safetensors").is_file()

    augmented = tmp_path / "augmented.yaml"
    augmented.write_text("extends: cached.yaml\ncustom:\n  augment_prob: 0.5\n  augment: [{op: hflip, p: 1.0}]\n")
    refused = _py("-m", "src.sft", "--config", str(augmented), "--dry-run")
    assert refused.returncode == 2 and "cannot be augmented" in refused.stderr

    train = tmp_path / "data" / "train.jsonl"
    train.write_text(train.read_text() + train.read_text().splitlines()[0] + "\n")  # the data changed
    stale = _py("-m", "src.sft", "--config", str(cached), "--dry-run")
    assert stale.returncode == 2, stale.stdout[-2000:]
    assert "was built from other data or settings (train_jsonl changed)" in stale.stderr

    again = _py("-m", "src.datasets", "cache", "--config", str(base), "--out", str(tmp_path / "cache"))
    assert again.returncode == 2 and "--overwrite" in again.stderr
