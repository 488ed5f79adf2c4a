"""The learning proof: train the tiny model until it memorises four synthetic images holding every geometry
kind (boxes, quads, points, polygons: `synth --every_kind`), predict them with `src.infer`, score with
`src.eval`: AP50 >= 0.9 proves labels, coordinates, parsing and the way back to pixels agree end to end, for
each kind. The run evaluates by generation every 200 steps (src/training/generation_eval.py):
its logged AP50 climbs from ~0, the best checkpoint is the one with the highest logged AP50, and `src.infer`
+ `src.eval` on it give the logged number. About 2 minutes on 2 cores; the commands run in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from src.datasets.synth import write_synthetic_dataset
from src.eval import main as eval_main
from src.infer import main as infer_main
from src.sft import main as sft_main
from src.tiny_model import build_tiny_model
from src.training.curves import read_metric_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_tiny_model_memorises_and_predicts_back_to_pixels(tmp_path, capsys):
    build_tiny_model(tmp_path / "model")
    data = write_synthetic_dataset(tmp_path / "data", n=5, val_fraction=0.2, every_kind=True)
    assert data["n_train"] == 4
    train = [json.loads(line) for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    assert {key for r in train for o in r["objects"] for key in o if key != "desc"} == {
        "bbox_2d", "quad", "point_2d", "polygon"}  # every geometry kind is memorised and predicted back
    config = tmp_path / "memorise.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'demo' / 'memorise.yaml'}\nmodel:\n  model: ./model\n"
                      "custom:\n  train_jsonl: data/train.jsonl\n  val_jsonl: data/train.jsonl\n"
                      "training:\n  output_dir: ./run\n")
    assert sft_main(["--config", str(config)]) == 0
    trained = capsys.readouterr().out
    run = tmp_path / "run"
    logged = read_metric_rows(run / "logging.jsonl", ("eval_ap50", "eval_parse_failure_rate"))
    ap50_by_step = dict(logged["eval_ap50"])
    assert sorted(ap50_by_step) == [0, 200, 400], logged
    assert ap50_by_step[0] <= 0.1 and max(ap50_by_step.values()) >= 0.9, logged  # from nothing to memorised
    assert dict(logged["eval_parse_failure_rate"])[400] == 0.0
    assert len(list((run / "eval_predictions").glob("step-*.jsonl"))) == 3
    # The best checkpoint is the first with the highest AP50 (HF keeps a new best only when it is higher),
    # and save_total_limit: 1 has not deleted it.
    state = json.loads((run / "last-checkpoint" / "trainer_state.json").read_text())
    saved = {step: value for step, value in ap50_by_step.items() if step > 0}
    best_step = min(step for step, value in saved.items() if value == max(saved.values()))
    assert Path(state["best_model_checkpoint"]).name == f"checkpoint-{best_step}"
    assert state["best_metric"] == pytest.approx(saved[best_step])
    assert f"best checkpoint (by ap50): {state['best_model_checkpoint']} at step {best_step}" in trained
    best = run / f"checkpoint-{best_step}"
    assert best.is_dir()
    with Image.open(run / "loss_curves.png") as picture:  # the loss, and AP50 beside it
        assert picture.width == 1200

    predictions, metrics = tmp_path / "pred.jsonl", tmp_path / "metrics.json"
    assert infer_main(["--config", str(config), "--checkpoint", str(best), "--jsonl", str(tmp_path / "data" /
                       "train.jsonl"), "--out", str(predictions), "--max_new_tokens", "256"]) == 0
    assert eval_main(["--pred", str(predictions), "--gt", str(tmp_path / "data" / "train.jsonl"),
                      "--out", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    ap50 = result["class_agnostic"]["AP50"]
    assert ap50 >= 0.9, json.dumps(result)[:2000]
    # the points (dots) and the polygon (triangle) found again, by the point rule and polygon IoU
    assert all(m["recall"] == 1.0 for desc, m in result["per_desc"].items() if desc.endswith((" dot", " triangle")))
    assert ap50 == pytest.approx(saved[best_step], abs=1e-9)  # the same code, the same number


def test_the_tiny_moe_memorises_too(tmp_path):
    """A short proof on the Qwen3-VL MoE (4 experts, top-2; the memorise recipe trains the whole LLM, experts
    and router included): two images, 200 steps, then AP50 >= 0.9 by generation (the untrained model's is 0:
    the dense proof above shows the climb)."""
    build_tiny_model(tmp_path / "model", arch="qwen3_vl_moe")
    data = write_synthetic_dataset(tmp_path / "data", n=3, val_fraction=0.34)
    assert data["n_train"] == 2
    config = tmp_path / "memorise.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'demo' / 'memorise.yaml'}\n"
                      "model:\n  model: ./model\n  model_type: qwen3_vl_moe\n"
                      "custom:\n  train_jsonl: data/train.jsonl\n  val_jsonl: data/train.jsonl\n"
                      "eval:\n  samples: 2\n"
                      "training:\n  output_dir: ./run\n  eval_steps: 200\n  save_steps: 200\n  eval_on_start: false\n"
                      "  metric_for_best_model: null\n")
    assert sft_main(["--config", str(config)]) == 0
    ap50_by_step = dict(read_metric_rows(tmp_path / "run" / "logging.jsonl", ("eval_ap50",))["eval_ap50"])
    assert sorted(ap50_by_step) == [200] and ap50_by_step[200] >= 0.9, ap50_by_step
