"""`python -m src.infer` with the description-grounding scheme: one question per description, one line per record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.datasets.validation import load_records
from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_grounding_scheme_predicts_one_line_per_record_and_counts_failures(tmp_path):
    model = build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=5, val_fraction=0.4)
    config = tmp_path / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: ./model\n"
                      "custom:\n  train_jsonl: data/train.jsonl\n  val_jsonl: data/val.jsonl\n"
                      "prompts:\n  scheme: grounding\ntraining:\n  output_dir: ./out\n")
    out = tmp_path / "pred.jsonl"
    proc = subprocess.run([sys.executable, "-m", "src.infer", "--config", str(config), "--checkpoint", str(model),
                           "--out", str(out), "--max_new_tokens", "8"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "engine transformers" in proc.stdout
    records, _ = load_records(tmp_path / "data" / "val.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [line["source"] for line in lines] == [f"{r.source.file}:{r.source.line}" for r in records]
    for record, line in zip(records, lines, strict=True):
        asked = len({o.desc for o in record.objects})
        assert line["raw"].count("\n") >= asked - 1  # one answer per description, joined
    # The summary line counts the lines whose answers did not parse, whatever the untrained model wrote.
    failed = sum(1 for line in lines if line["parse_error"])
    assert f"({len(records)} records, {failed} with parse errors, engine transformers)" in proc.stdout
