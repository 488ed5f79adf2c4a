"""The pre-encoded cache: built once with ms-swift's cached-dataset format, trained on, refused when stale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.datasets.__main__ import main as datasets_main
from src.datasets.synth import write_synthetic_dataset
from src.sft import main as sft_main
from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_cache_is_built_trained_on_and_refused_once_stale(tmp_path, capsys):
    build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=6)
    base = tmp_path / "base.yaml"
    base.write_text(f"extends: [{REPO / 'configs' / 'stage_2_llm_lora.yaml'}, {REPO / 'configs' / 'cpu.yaml'}]\n"
                    "model:\n  model: ./model\ncustom:\n  train_jsonl: data/train.jsonl\n  val_jsonl: data/val.jsonl\n"
                    "training:\n  output_dir: ./out\n  max_steps: 2\n  eval_strategy: 'no'\n")
    assert datasets_main(["cache", "--config", str(base), "--out", str(tmp_path / "cache")]) == 0
    assert "cached 5 train and 1 val rows" in capsys.readouterr().out  # synth: 6 images, 20 % for val

    cached = tmp_path / "cached.yaml"
    cached.write_text("extends: base.yaml\ncustom:\n  cached_dataset: ./cache\ntraining:\n  output_dir: ./cached\n")
    assert sft_main(["--config", str(cached)]) == 0
    printed = capsys.readouterr().out
    assert "lazy_tokenize = False" in printed
    assert (tmp_path / "cached" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    # What ms-swift was given (the printed plan cuts long values, so a deep tmp path would not show whole).
    trained_on = json.loads((tmp_path / "cached" / "checkpoint-2" / "args.json").read_text())
    assert trained_on["cached_dataset"] == [str(tmp_path / "cache" / "train")]

    augmented = tmp_path / "augmented.yaml"
    augmented.write_text("extends: cached.yaml\ncustom:\n  augment_prob: 0.5\n  augment: [{op: hflip, p: 1.0}]\n")
    assert sft_main(["--config", str(augmented), "--dry-run"]) == 2
    assert "cannot be augmented" in capsys.readouterr().err

    train = tmp_path / "data" / "train.jsonl"
    train.write_text(train.read_text() + train.read_text().splitlines()[0] + "\n")  # the data changed
    assert sft_main(["--config", str(cached), "--dry-run"]) == 2
    assert "was built from other data or settings (train_jsonl changed)" in capsys.readouterr().err

    assert datasets_main(["cache", "--config", str(base), "--out", str(tmp_path / "cache")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_cache_built_under_an_earlier_answer_rule_is_stale(tree, tmp_path):
    """Rounding on the grid or leaving ignore regions out changes the answers of the same data, and another image
    loader their pixels: a cache built before (another `answer_version` or `image_loader`) is refused, naming
    that. (Quick, though in this slow module.)"""
    from src.config import load_project_config
    from src.datasets.cache import CACHE_INFO, cache_fingerprint, cache_problems
    from src.datasets.images import IMAGE_LOADER_VERSION

    cfg = load_project_config(tree().config)
    cache = tmp_path / "cache"
    (cache / "train").mkdir(parents=True)
    fingerprint = cache_fingerprint(cfg)
    (cache / CACHE_INFO).write_text(json.dumps({"fingerprint": fingerprint}))
    assert cache_problems(cfg, cache) == []
    (cache / CACHE_INFO).write_text(json.dumps({"fingerprint": {**fingerprint, "answer_version": 1}}))
    assert "(answer_version changed)" in cache_problems(cfg, cache)[0]
    # The pixels it holds came from an earlier image loader (a 16-bit grey image saturated white, say).
    (cache / CACHE_INFO).write_text(json.dumps({"fingerprint": {**fingerprint, "image_loader": 3}}))
    assert "(image_loader changed)" in cache_problems(cfg, cache)[0]
    assert fingerprint["image_loader"] == IMAGE_LOADER_VERSION
