"""bench/gpu_check.py's decisions that do not need a GPU: how a run is launched for N GPUs, and how the
figures of a multi-GPU run are split per GPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def test_one_gpu_runs_one_process_and_several_run_torchrun_across_all():
    assert gpu_check.launcher(1) == [sys.executable]
    assert gpu_check.launcher(4) == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4"]
    assert gpu_check.launcher(1, force_torchrun=True)[-1] == "--nproc_per_node=1"  # DeepSpeed on one GPU


def test_figures_of_a_multi_gpu_run_are_split_per_gpu(tmp_path):
    rows = [{"loss": 1.0, "memory(GiB)": "12.5"}, {"train_samples_per_second": 8.0}]
    (tmp_path / "logging.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    figures = gpu_check.measure(tmp_path, mean_tokens=500.0, n_gpus=4)
    assert figures == {"samples_per_s": 8.0, "tokens_per_s": 4000.0, "tokens_per_s_per_gpu": 1000.0,
                       "peak_memory_gib": 12.5}


def test_the_dense_answer_is_measured_with_and_without_liger(tmp_path):
    names = {r["name"]: r for r in gpu_check.scenarios(flash=None, deepspeed=True, liger=False)}
    assert "skip" not in names["stage2 dense48"]
    assert "liger-kernel is not installed" in names["stage2 dense48 liger"]["skip"]
    liger = {r["name"]: r for r in gpu_check.scenarios(flash=None, deepspeed=True, liger=True)}["stage2 dense48 liger"]
    assert "skip" not in liger and liger["extra"]["training"]["use_liger_kernel"] is True
    path = gpu_check.write_dense_data(tmp_path, n=3, objects=48)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [len(r["objects"]) for r in lines] == [48, 48, 48]
    config = json.loads(gpu_check.write_config(tmp_path, liger, steps=2).read_text())
    assert config["custom"]["train_jsonl"] == str(tmp_path / "dense" / "train.jsonl")


def test_each_family_gets_a_config_the_project_accepts(tmp_path):
    """`--arch` writes the family's model_type and template; the project's own loader accepts the config
    against a model directory of that family (and would refuse a mismatch, see test_config_schema.py)."""
    from src.config import load_project_config
    from src.datasets.synth import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n=4)
    (tmp_path / "model").mkdir()
    run = gpu_check.scenarios(flash=None, deepspeed=False, liger=False)[0]
    for arch, template in (("qwen3_vl", "qwen3_vl"), ("qwen3_vl_moe", "qwen3_vl"), ("qwen3_5", "qwen3_5"),
                           ("qwen3_5_moe", "qwen3_5")):
        (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": arch}))
        cfg = load_project_config(gpu_check.write_config(tmp_path, run, steps=2, cpu=True, arch=arch))
        assert (cfg.swift["model_type"], cfg.swift["template"]) == (arch, template)
