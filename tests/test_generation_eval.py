"""The evaluation by generation's decisions, without training: its config errors (each before anything
starts, naming the key and the valid values), which records it answers, the report of the best checkpoint and
the curve picture. The runs themselves are in tests/test_eval_during_training.py and the learning proof."""

from __future__ import annotations

import importlib.util
import json

import pytest
from PIL import Image

from src.datasets.plan import pick_eval_records
from src.training.curves import plot_loss_curves, read_metric_rows
from src.training.generation_eval import best_checkpoint_report, logged_metrics


def _dry_run(config, capsys) -> tuple[int, str]:
    from src.sft import main

    code = main(["--config", str(config), "--dry-run"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_evaluation_on_plans_its_records_in_the_dry_run(tree, capsys):
    code, out = _dry_run(tree({"eval": {"samples": 1}}).config, capsys)
    assert code == 0 and "evaluation by generation: 1 validation records answered at each evaluation" in out


@pytest.mark.parametrize(("body", "expected"), [
    ({"eval": {"samples": 9}}, "`eval.samples` = 9 is more than the 1 valid records of `custom.val_jsonl`; "
                               "valid: 0 (off) to 1"),
    ({"eval": {"samples": -1}}, "`eval.samples` must be >= 0"),
    ({"eval": {"samples": 1, "max_new_tokens": 0}}, "`eval.max_new_tokens` must be >= 1, got 0"),
    ({"eval": {"samples": 1, "batch_size": 0}}, "`eval.batch_size` must be >= 1, got 0"),
    ({"eval": {"vllm_gpu_memory_utilization": 1.0}}, "`eval.vllm_gpu_memory_utilization` = 1.0: the share of the "
                                                     "GPU vLLM takes beside the training; allowed: more than 0, "
                                                     "less than 1"),
    ({"eval": {"samples": 1, "backend": "vllm"}}, "`eval.backend: vllm` needs a CUDA GPU, but `use_cpu` is on"),
    ({"eval": {"samples": 1, "backend": "tgi"}}, "`eval.backend` = 'tgi'"),
    ({"training": {"metric_for_best_model": "ap50"}},
     "`training.metric_for_best_model` = 'ap50' is not a metric this run's evaluation produces (the grounding "
     "metrics need the evaluation by generation: `eval.samples` > 0 and `custom.val_jsonl`); valid: loss"),
    ({"eval": {"samples": 1}, "training": {"metric_for_best_model": "rouge-l"}},
     "`training.metric_for_best_model` = 'rouge-l' is not a metric this run's evaluation produces; valid: loss, "
     "ap, ap50, ap75, precision, recall, f1"),
])
def test_bad_evaluation_settings_stop_before_anything_starts(tree, capsys, body, expected):
    made = tree(body)
    code, out = _dry_run(made.config, capsys)
    assert code == 2 and expected in out, out
    assert f"{made.config}:" in out  # the file and line that set it
    assert not made.output_dir.exists()


def test_an_empty_validation_set_with_the_evaluation_on_is_an_error(tree, capsys):
    made = tree({"eval": {"samples": 1}})
    made.val_jsonl.write_text("")
    code, out = _dry_run(made.config, capsys)
    assert code == 2 and "`custom.val_jsonl` holds no valid record to answer" in out, out


def test_the_evaluated_records_are_the_first_n_or_a_seeded_sample_in_file_order():
    records = list(range(20))
    assert pick_eval_records(records, 3, "first", 42) == [0, 1, 2]
    drawn = pick_eval_records(records, 5, "sample", 42)
    assert drawn == pick_eval_records(records, 5, "sample", 42) == sorted(drawn) and len(set(drawn)) == 5
    assert drawn != [0, 1, 2, 3, 4] and drawn != pick_eval_records(records, 5, "sample", 7)


def test_logged_metrics_take_the_class_agnostic_numbers_and_the_answers_health():
    from src.inference.predictions import PredictionLine

    metrics = {"class_agnostic": {"AP": 0.5, "AP50": 0.75, "AP75": None, "precision": 1.0, "recall": 0.5,
                                  "f1": 2 / 3}, "parse_failure_rate": 0.25}
    lines = [PredictionLine(source="a:1", image="x", truncated=True), PredictionLine(source="a:2", image="y")]
    assert logged_metrics(metrics, lines, 1.23456) == {
        "ap": 0.5, "ap50": 0.75, "ap75": 0.0, "precision": 1.0, "recall": 0.5, "f1": 2 / 3,
        "parse_failure_rate": 0.25, "truncated_rate": 0.5, "generation_seconds": 1.235}


def test_the_run_ends_naming_the_best_checkpoint_and_its_metrics(tmp_path):
    history = [{"loss": 3.0, "step": 2}, {"eval_loss": 2.5, "step": 2}, {"eval_ap50": 0.4, "eval_ap": 0.2, "step": 2},
               {"eval_loss": 2.0, "step": 4}, {"eval_ap50": 0.9, "eval_ap": 0.6, "eval_generation_seconds": 3.5,
                                               "step": 4}]
    result = {"best_model_checkpoint": str(tmp_path / "checkpoint-4"), "log_history": history}
    assert best_checkpoint_report(result, "ap50") == (
        f"best checkpoint (by ap50): {tmp_path / 'checkpoint-4'} at step 4: loss 2, ap 0.6, ap50 0.9, "
        "generation_seconds 3.5")
    assert best_checkpoint_report(result, None) is None
    assert best_checkpoint_report({"best_model_checkpoint": None}, "ap50") is None


def test_the_curves_show_ap50_and_parse_failures_beside_the_loss(tmp_path):
    log = tmp_path / "logging.jsonl"
    rows = [{"loss": 2.0, "global_step/max_steps": "1/4"}, {"loss": 1.0, "global_step/max_steps": "2/4"},
            {"eval_ap50": 0.1, "eval_parse_failure_rate": 0.5, "global_step/max_steps": "2/4"},
            {"eval_ap50": True, "global_step/max_steps": "3/4"},  # not a number: skipped
            {"eval_ap50": 0.8, "eval_parse_failure_rate": 0.0, "global_step/max_steps": "4/4"}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_metric_rows(log, ("eval_ap50",)) == {"eval_ap50": [(2, 0.1), (4, 0.8)]}
    with Image.open(plot_loss_curves(log, tmp_path / "with.png")) as picture:
        assert picture.width == 1200
    log.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    with Image.open(plot_loss_curves(log, tmp_path / "without.png")) as picture:
        assert picture.width == 700


def test_a_step_evaluated_again_gets_a_new_predictions_file(tmp_path):
    from src.training.generation_eval import new_predictions_path

    first = new_predictions_path(tmp_path, 4)
    assert first.name == "step-4.jsonl"
    first.write_text("earlier run\n")
    assert new_predictions_path(tmp_path, 4).name == "step-4.2.jsonl"  # a resumed run never overwrites it


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_the_vllm_backend_without_vllm_stops_before_anything_starts_with_the_install_line(tree, capsys):
    made = tree({"eval": {"samples": 1, "backend": "vllm"}, "training": {"use_cpu": False}})
    code, out = _dry_run(made.config, capsys)
    assert code == 2 and "`eval.backend: vllm` needs the vllm package, which is not installed: pip install vllm" in out
    assert f"{made.config}:" in out and not made.output_dir.exists()


def test_the_vllm_engine_of_the_evaluation_starts_from_the_runs_model_one_per_process(tree):
    from src.datasets.run_config import load_config_for_run
    from src.training.distributed import Job
    from src.training.vllm_eval import eval_engine_kwargs
    from tests.test_infer_engine import _vllm_engine_parameters

    made = tree({"eval": {"samples": 1, "batch_size": 8, "max_new_tokens": 300, "vllm_gpu_memory_utilization": 0.25},
                 "global_max_length": 2048})
    cfg = load_config_for_run(made.config, check_paths=False)
    alone, second = eval_engine_kwargs(cfg, Job()), eval_engine_kwargs(cfg, Job(rank=1, world_size=2))
    assert set(alone) <= _vllm_engine_parameters() and set(second) <= _vllm_engine_parameters()
    assert alone["model_id_or_path"] == str(cfg.swift["model"]) and "adapters" not in alone  # weights come later
    assert (alone["max_num_seqs"], alone["gpu_memory_utilization"], alone["max_model_len"]) == (8, 0.25, 2048 + 300)
    assert "distributed_executor_backend" not in alone and alone["seed"] == 0
    assert (second["distributed_executor_backend"], second["seed"]) == ("external_launcher", 1)


@pytest.mark.slow
def test_the_weights_given_to_vllm_are_the_merged_models_and_the_trained_model_is_untouched(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from src.tiny_model import build_tiny_model
    from src.training.vllm_eval import merged_weights

    build_tiny_model(tmp_path / "model")
    base = AutoModelForImageTextToText.from_pretrained(tmp_path / "model", dtype=torch.float32)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                            modules_to_save=["merger"], init_lora_weights=False))
    with torch.no_grad():  # the saved aligner trained away from the frozen copy peft keeps
        for name, param in model.named_parameters():
            if ".modules_to_save.default." in name:
                param.add_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    given = dict(merged_weights(model))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing merged in place
    assert set(given) == set(original)  # the checkpoint's names, no LoRA factor, no frozen copy
    changed = {k for k in original if not torch.allclose(given[k], original[k])}
    assert any("q_proj" in k for k in changed) and any(".merger." in k for k in changed)
    assert not any("k_proj" in k for k in changed)
    merged = model.merge_and_unload().state_dict()
    for k in original:
        assert torch.allclose(given[k], merged[k], atol=1e-6), k
