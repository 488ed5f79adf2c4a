"""Inference sends its questions to ms-swift's real transformers engine `batch_size` at a time, and the answers are
those of asking one question at a time (tiny Qwen3-VL, CPU). The calls are counted by thin spies that call
through to the real engine and model: nothing is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.datasets.loading import load_shards
from src.datasets.plan import make_preprocessor
from src.datasets.run_config import load_config_for_run
from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TOKENS = 12


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    build_tiny_model(root / "model")
    write_synthetic_dataset(root / "data", n=7, val_fraction=0.72)  # 5 validation records
    config = root / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: ./model\n"
                      "custom:\n  train_jsonl: data/train.jsonl\n  val_jsonl: data/val.jsonl\n"
                      "training:\n  output_dir: ./out\n")
    cfg = load_config_for_run(config, check_paths=False)
    records = load_shards([root / "data" / "val.jsonl"], cfg.custom.bad_records)[1]
    return root, cfg, records, make_preprocessor(cfg).builder


def _spied_engine(cfg, model: Path, batch_size: int):
    """The real engine, with its `infer` and its model's `generate` wrapped to record the batch each received."""
    from src.inference.engine import make_engine

    engine = make_engine("transformers", cfg, model, batch_size=batch_size)
    calls = {"infer": [], "generate": []}
    real_infer, real_generate = engine.infer, engine.model.generate

    def infer(requests, *args, **kwargs):
        calls["infer"].append(len(requests))
        return real_infer(requests, *args, **kwargs)

    def generate(*args, **kwargs):
        calls["generate"].append(int(kwargs["input_ids"].shape[0]))
        return real_generate(*args, **kwargs)

    engine.infer, engine.model.generate = infer, generate
    return engine, calls


def test_questions_go_in_chunks_of_the_batch_size_with_the_answers_of_one_at_a_time(setting):
    from src.inference.engine import predict

    root, cfg, records, builder = setting
    assert len(records) == 5
    answers = {}
    engine, calls = _spied_engine(cfg, root / "model", 2)  # one model load for the three sizes
    assert engine.max_batch_size == 2  # make_engine: the engine generates the whole chunk at once
    for batch_size in (1, 2, 64):
        engine.max_batch_size = batch_size  # what make_engine sets from the batch size
        calls["infer"].clear(), calls["generate"].clear()
        lines = predict(records, builder, engine, TOKENS, cfg.custom.emit_norm, use_tqdm=False,
                        batch_size=batch_size)
        expected = {1: [1] * 5, 2: [2, 2, 1], 64: [5]}[batch_size]
        assert calls["infer"] == expected  # the engine received the questions in chunks of batch_size
        assert calls["generate"] == expected  # and generated each chunk in one batched call
        answers[batch_size] = [line.to_json() for line in lines]
    assert answers[2] == answers[1] and answers[64] == answers[1]  # raw text, objects and scores alike
    assert any(line["raw"] for line in answers[1])


def test_src_infer_takes_batch_size_and_refuses_vllm_where_it_is_not_installed(setting, capsys):
    import importlib.util

    from src.infer import main

    root, _, _, _ = setting
    config = root / "run.yaml"
    out = root / "pred.jsonl"
    assert main(["--config", str(config), "--checkpoint", str(root / "model"), "--out", str(out),
                 "--max_new_tokens", str(TOKENS), "--batch_size", "3", "--limit", "4"]) == 0
    assert "4 records" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 4
    if importlib.util.find_spec("vllm") is None:  # the case here: exit 2 naming the option and the remedy
        code = main(["--config", str(config), "--checkpoint", str(root / "model"), "--out",
                     str(root / "pred-vllm.jsonl"), "--backend", "vllm"])
        err = capsys.readouterr().err
        assert code == 2 and "--backend vllm needs the vllm package" in err and "pip install vllm" in err, err
        assert not (root / "pred-vllm.jsonl").exists()
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error
        main(["--config", str(config), "--checkpoint", str(root / "model"), "--out", str(root / "p0.jsonl"),
              "--batch_size", "0"])
    assert stopped.value.code == 2 and "--batch_size/--batch-size: must be >= 1, got 0" in capsys.readouterr().err
    assert json.loads(out.read_text().splitlines()[0])["source"].endswith(":1")
