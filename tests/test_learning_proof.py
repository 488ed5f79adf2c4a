"""The learning proof: train the tiny model until it memorises four synthetic images, predict them with
`src.infer`, score with `src.eval`: AP50 >= 0.9 proves labels, coordinates, parsing and the way back
to pixels agree end to end. About 90 s on 2 cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_tiny_model_memorises_and_predicts_back_to_pixels(tmp_path):
    build_tiny_model(tmp_path / "model")
    data = write_synthetic_dataset(tmp_path / "data", n=5, val_fraction=0.2)
    assert data["n_train"] == 4
    config = tmp_path / "memorise.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'demo' / 'memorise.yaml'}\nmodel:\n  model: ./model\n"
                      "custom:\n  train_jsonl: data/train.jsonl\ntraining:\n  output_dir: ./run\n")
    _run("-m", "src.sft", "--config", str(config))
    predictions, metrics = tmp_path / "pred.jsonl", tmp_path / "metrics.json"
    _run("-m", "src.infer", "--config", str(config), "--checkpoint", str(tmp_path / "run" / "last-checkpoint"),
         "--jsonl", str(tmp_path / "data" / "train.jsonl"), "--out", str(predictions), "--max_new_tokens", "256")
    _run("-m", "src.eval", "--pred", str(predictions), "--gt", str(tmp_path / "data" / "train.jsonl"),
         "--out", str(metrics))
    result = json.loads(metrics.read_text())
    ap50 = result["class_agnostic"]["AP50"]
    assert ap50 >= 0.9, json.dumps(result)[:2000]
