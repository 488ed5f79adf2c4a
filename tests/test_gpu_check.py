"""bench/gpu_check.py: its decisions (which scenarios run, the budget, the steady-state figures, the table),
and the whole check with `--size tiny` on CPU from a fresh work dir, without the project installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up while being defined
_spec.loader.exec_module(gpu_check)

CPU_ONLY = gpu_check.Machine(cuda=False, n_gpus=0, flash=None, liger=True, vllm=True, deepspeed=True,
                             answer_only_default=None)


def test_one_gpu_runs_one_process_and_several_run_torchrun_across_all():
    assert gpu_check.launcher(1) == [sys.executable]
    assert gpu_check.launcher(4) == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4"]
    assert gpu_check.launcher(1, force_torchrun=True)[-1] == "--nproc_per_node=1"  # DeepSpeed on one GPU


def test_a_child_imports_src_from_this_checkout_without_the_install(tmp_path):
    """-S: no site-packages and no editable-install hook; only child_env's PYTHONPATH can find `src`."""
    proc = subprocess.run([sys.executable, "-S", "-c", "import src; print(src.__file__)"], cwd=tmp_path,
                          env=gpu_check.child_env({"H4_PROBE": "1"}), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == (REPO / "src" / "__init__.py").resolve()
    assert gpu_check.child_env({"H4_PROBE": "1"})["H4_PROBE"] == "1"


def test_scenarios_come_in_order_of_value_and_those_that_cannot_run_here_say_why():
    runs = gpu_check.scenarios(CPU_ONLY)
    names = [r.name for r in runs]
    assert names[0] == "stage2 dense" and names.index("profile 3 dense steps") < names.index("stage1 small samples")
    by_name = {r.name: r for r in runs}
    assert "custom.answer_only_logits is unknown" in by_name["stage2 dense answer-only flipped"].skip
    for gpu_only in ("stage2 dense liger", "stage2 dense expandable_segments", "stage2 dense packing",
                     "generation vllm", "stage2 dense ZeRO-2"):
        assert "CUDA GPU" in by_name[gpu_only].skip
    for runs_on_cpu in ("stage2 dense", "profile 3 dense steps", "stage1 small samples", "stage2 small samples",
                        "generation transformers", "raw ms-swift stage2 dense"):
        assert by_name[runs_on_cpu].skip is None
    assert by_name["stage2 dense expandable_segments"].child  # the allocator reads its variable at CUDA start
    assert by_name["stage2 dense expandable_segments"].env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def test_on_a_gpu_the_flipped_answer_only_run_and_the_installed_extras_run():
    gpu = gpu_check.Machine(cuda=True, n_gpus=1, flash="flash_attention_4", liger=False, vllm=False,
                            deepspeed=False, answer_only_default=True)
    by_name = {r.name: r for r in gpu_check.scenarios(gpu)}
    flipped = by_name["stage2 dense answer_only_logits=false"]
    assert flipped.skip is None and flipped.extra == {"custom": {"answer_only_logits": False}}
    assert by_name["stage2 dense packing"].skip is None
    assert by_name["stage2 dense packing"].extra["model"]["attn_impl"] == "flash_attention_4"
    assert "liger_kernel is not installed" in by_name["stage2 dense liger"].skip
    assert "vllm is not installed" in by_name["generation vllm"].skip
    several = {r.name: r for r in gpu_check.scenarios(gpu_check.Machine(**{**gpu.__dict__, "n_gpus": 4}))}
    assert several["stage2 dense"].torchrun and "one process" in several["profile 3 dense steps"].skip


def test_gpus_limits_the_visible_gpus_and_a_callers_choice_is_kept_narrowed_to_n():
    assert gpu_check.gpu_selection(None, None) == (None, None)
    assert gpu_check.gpu_selection(None, "2,3")[0] is None and "kept" in gpu_check.gpu_selection(None, "2,3")[1]
    value, note = gpu_check.gpu_selection(2, None)
    assert value == "0,1" and "first 2" in note
    assert gpu_check.gpu_selection(1, "3") == (None, "CUDA_VISIBLE_DEVICES='3' set before the check: kept (--gpus 1)")
    value, note = gpu_check.gpu_selection(2, "5, 6,7")
    assert value == "5,6" and "set before the check" in note and "'5,6'" in note


def test_non_tiny_size_without_a_cuda_gpu_is_refused_before_building_anything(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU even on a machine that has one
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--size", "2b", "--work",
                           str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--size 2b needs a CUDA GPU and none is visible" in proc.stderr
    assert not (tmp_path / "work" / "model").exists()


def test_raw_ms_swift_is_compared_with_the_project_run_and_with_the_full_logits_run():
    rows = [{"scenario": "stage2 dense", "status": "measured", "samples_per_s": 3.0},
            {"scenario": "stage2 dense answer_only_logits=false", "status": "measured", "samples_per_s": 2.2}]
    on = gpu_check.raw_comparison(rows, 2.0, answer_only_default=True)
    assert on["project_over_raw"] == 1.5 and on["project_full_logits_over_raw"] == 1.1
    assert "stage2 dense (answer-only logits on) 1.50x" in on["note"]
    assert "stage2 dense answer_only_logits=false 1.10x (ms-swift's full-logits path" in on["note"]
    # Answer-only logits off by default (or unknown here): the baseline itself is the full-logits run.
    off = gpu_check.raw_comparison(rows[:1], 2.0, answer_only_default=False)
    assert off["project_over_raw"] == off["project_full_logits_over_raw"] == 1.5
    assert gpu_check.raw_comparison(rows[:1], 2.0, True)["project_full_logits_over_raw"] is None
    assert "not measured" in gpu_check.raw_comparison(rows[:1], 2.0, True)["note"]


@pytest.mark.slow
def test_the_budget_stops_a_run_in_process_and_in_a_child_and_generation_yields_each_batch_size(mp_workspace,
                                                                                                tmp_path):
    """A spent budget ends an in-process run after its first step and a child process at its timeout;
    generation yields each batch size's figures as measured (asked as src.infer asks, with log-probabilities),
    stops between generate calls once the budget is spent and skips the next batch size."""
    def config(name: str, steps: int = 3) -> Path:
        return gpu_check.write_config(tmp_path / f"{name}.yaml", gpu_check.Scenario(name, data="synth"),
                                      mp_workspace / "model", mp_workspace / "data" / "train.jsonl",
                                      tmp_path / name, steps, cpu=True)

    stopped = gpu_check.train_in_process(config("spent"), tmp_path / "spent.log", budget=gpu_check.Budget(0.0))
    assert stopped and stopped.startswith("stopped at the budget after step 1 of 3")
    logged = [r for r in gpu_check.read_logging(tmp_path / "spent") if "loss" in r]
    assert [gpu_check._step(r) for r in logged] == [1]
    assert gpu_check.train_in_process(config("within"), tmp_path / "within.log", budget=gpu_check.Budget(600)) is None
    assert len([r for r in gpu_check.read_logging(tmp_path / "within") if "loss" in r]) == 3

    child = gpu_check.Scenario("child", child=True)
    started = time.monotonic()
    stopped = gpu_check.train_in_child(config("child"), tmp_path / "child.log", child, 0, timeout_s=1.0)
    assert "stopped at the budget" in stopped and time.monotonic() - started < 15

    dense = config("dense")
    figures = gpu_check.run_generation(dense, mp_workspace / "model", (2, 0), 4, "transformers", 4)
    first = next(figures)  # measured and handed over before the next batch size runs
    assert first["batch_size"] == 2 and first["questions"] == 4 and first["generated_tokens"] > 0
    assert first["logprob_tokens"] == first["generated_tokens"]  # src.infer's path: logprobs=True
    with pytest.raises(ValueError):
        next(figures)  # a batch size that fails loses only itself
    spent = list(gpu_check.run_generation(dense, mp_workspace / "model", (2, 8), 4, "transformers", 4,
                                          gpu_check.Budget(0.0)))
    assert spent[0]["questions"] == 2 and spent[0]["stopped"] == "stopped at the budget after 2 of 4 questions"
    assert spent[1] == {"batch_size": 8, "skipped": spent[1]["skipped"]} and "budget spent" in spent[1]["skipped"]


def _swift_rows(step_seconds: list[float], memory: list[float]) -> list[dict]:
    """Log lines as ms-swift writes them: cumulative elapsed time / step, rounded as it rounds."""
    rows, elapsed = [], 0.0
    for step, (seconds, gib) in enumerate(zip(step_seconds, memory, strict=True), start=1):
        elapsed += seconds
        rows.append({"loss": 1.0, "global_step/max_steps": f"{step}/{len(step_seconds)}",
                     "memory(GiB)": gib, "train_speed(s/it)": round(elapsed / step, 6)})
    summary = {"train_runtime": elapsed + 3.0, "global_step/max_steps": f"{len(rows)}/{len(rows)}",
               "train_speed(s/it)": round((elapsed + 3.0) / len(rows), 6)}  # ms-swift stamps its summary too
    return rows + [summary]


def test_steady_state_leaves_out_the_first_steps_of_ms_swifts_cumulative_log():
    steps, memory = [9.0, 1.2, 1.0, 1.4, 1.1], [28.0, 47.0, 66.0, 85.0, 85.0]
    figures = gpu_check.steady_state(_swift_rows(steps, memory), warmup_steps=2, samples_per_step=4,
                                     mean_tokens=2000.0)
    assert figures["steady_steps"] == 3
    assert figures["first_step_s"] == pytest.approx(steps[0], abs=1e-3)
    assert figures["s_per_step"] == pytest.approx(sum(steps[2:]) / 3, abs=1e-3)
    assert figures["tokens_per_s"] == pytest.approx(4 * 2000.0 / (sum(steps[2:]) / 3), rel=1e-3)
    assert figures["tokens_source"].startswith("estimated")
    assert figures["peak_memory_gib"] == max(memory) and figures["memory_by_step"] == memory
    with pytest.raises(ValueError, match="no logged step after the 5 warm-up steps"):
        gpu_check.steady_state(_swift_rows(steps, memory), warmup_steps=5, samples_per_step=4)


def test_steady_state_prefers_the_projects_step_accounting():
    rows = [{"global_step/max_steps": f"{s}/4", "train_speed(s/it)": 50.0, "step_time_s": t, "tokens_per_s": k,
             "data_wait_share": w, "peak_memory_gib": m, "memory(GiB)": m + s}
            for s, t, k, w, m in ((1, 30.0, 10.0, 0.9, 5.0), (2, 2.0, 800.0, 0.1, 6.0), (3, 4.0, 600.0, 0.3, 7.5),
                                  (4, 3.0, 700.0, 0.2, 7.0))]
    figures = gpu_check.steady_state(rows, warmup_steps=1, samples_per_step=4, mean_tokens=1.0)
    assert figures["s_per_step"] == pytest.approx(3.0) and figures["tokens_per_s"] == pytest.approx(700.0)
    assert figures["data_wait_share"] == pytest.approx(0.2) and figures["peak_memory_gib"] == 7.5
    assert figures["tokens_source"] == "logged real tokens" and figures["mfu"] is None
    # ms-swift's reserved figure shows the allocator's growth step by step; the peak is the allocated one
    assert figures["memory_by_step"] == [6.0, 8.0, 10.5, 11.0] and figures["peak_reserved_gib"] == 11.0


def test_a_scenario_that_would_not_finish_in_the_time_left_is_skipped_with_the_figures():
    budget = gpu_check.Budget(total_s=100.0)
    dense = gpu_check.Scenario("stage2 dense")
    assert budget.estimate(dense, steps=10) == (None, "nothing measured yet")
    assert gpu_check.budget_skip(None, "nothing measured yet", left_s=5.0) is None  # the first one runs
    budget.start_up_s["process"], budget.step_s["dense"] = 20.0, 1.5
    estimate, how = budget.estimate(dense, steps=10)
    assert estimate == pytest.approx(35.0) and "10 steps x 1.50 s" in how
    child = gpu_check.Scenario("x", child=True)
    assert budget.estimate(child, steps=10)[0] == pytest.approx(35.0 + gpu_check.SUBPROCESS_START_GUESS_S)
    budget.start_up_s["child"] = 50.0
    assert budget.estimate(child, steps=10)[0] == pytest.approx(65.0)
    assert budget.estimate(gpu_check.Scenario("small", data="synth"), steps=10)[0] == pytest.approx(35.0)
    reason = gpu_check.budget_skip(estimate, how, left_s=30.0)
    assert "would not finish in the 30 s left (estimate 35 s" in reason
    assert gpu_check.budget_skip(estimate, how, left_s=40.0) is None
    assert "budget spent" in gpu_check.budget_skip(None, "", left_s=-3.0)


def test_results_are_appended_the_moment_they_come_and_tabled_with_ratios(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text('{"run_id": "earlier"}\n')
    results = gpu_check.Results(path, "run-1")
    results.add({"scenario": "stage2 dense", "kind": "train", "status": "measured", "s_per_step": 1.25,
                 "tokens_per_s": 7000.0, "memory_by_step": [28.0, 47.0, 66.0, 85.0, 85.0]})
    assert json.loads(path.read_text().splitlines()[-1])["scenario"] == "stage2 dense"  # written before the next
    results.add({"scenario": "stage2 small samples", "kind": "train", "status": "measured", "tokens_per_s": 1400.0})
    results.add({"scenario": "stage2 dense liger", "kind": "train", "status": "skipped", "reason": "a | b"})
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"run_id": "earlier"} and len(lines) == 4
    assert {json.loads(x)["run_id"] for x in lines[1:]} == {"run-1"}
    assert "[gpu_check]" in capsys.readouterr().out
    table = gpu_check.markdown_table(results.rows).splitlines()
    assert len(table) == 2 + 3
    assert "| 1.00x |" in table[2] and "| 0.20x |" in table[3]
    assert "28.0 -> 66.0 -> 85.0 -> 85.0" in table[2]
    assert table[4].endswith("| a / b |")  # a reason's '|' does not break the table


def test_each_family_gets_a_config_the_project_accepts(tmp_path):
    """`--arch` writes the family's model_type and template; the project's own loader accepts the config
    against a model directory of that family (and would refuse a mismatch, see test_config_schema.py)."""
    from src.config import load_project_config
    from src.datasets.synth import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n=4)
    (tmp_path / "model").mkdir()
    run = gpu_check.scenarios(CPU_ONLY)[0]
    for arch, template in (("qwen3_vl", "qwen3_vl"), ("qwen3_vl_moe", "qwen3_vl"), ("qwen3_5", "qwen3_5"),
                           ("qwen3_5_moe", "qwen3_5")):
        (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": arch}))
        path = gpu_check.write_config(tmp_path / f"{arch}.yaml", run, tmp_path / "model",
                                      tmp_path / "data" / "train.jsonl", tmp_path / "runs" / arch, steps=2,
                                      cpu=True, arch=arch)
        cfg = load_project_config(path)
        assert (cfg.swift["model_type"], cfg.swift["template"]) == (arch, template)
        assert cfg.swift["use_cpu"] is True and cfg.swift["max_steps"] == 2
    liger = next(r for r in gpu_check.scenarios(CPU_ONLY) if r.name == "stage2 dense liger")
    gpu = json.loads(gpu_check.write_config(tmp_path / "g.yaml", liger, tmp_path / "model", tmp_path / "d.jsonl",
                                            tmp_path / "o", steps=2).read_text())
    assert gpu["training"]["use_liger_kernel"] is True and gpu["training"]["bf16"] is True


def test_the_dense_data_has_the_asked_number_of_objects(tmp_path):
    path = gpu_check.write_dense_data(tmp_path, n=3, objects=48)
    assert [len(json.loads(x)["objects"]) for x in path.read_text().splitlines()] == [48, 48, 48]


def _check(work: Path, cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    """The check as someone without the project installed runs it: `python -S` (no site, so no editable
    install hook) with only the installed packages on PYTHONPATH, from a directory outside the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    return subprocess.run([sys.executable, "-S", str(REPO / "bench" / "gpu_check.py"), "--size", "tiny", "--work",
                           str(work), *flags], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_whole_check_runs_on_cpu_from_a_fresh_work_dir(tmp_path):
    work = tmp_path / "work"
    proc = _check(work, tmp_path, "--budget_s", "300", "--steps", "2", "--warmup_steps", "1", "--dense_objects", "4",
                  "--gpus", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / "model" / "tiny_model.json").is_file()  # built on a fresh work dir
    [jsonl] = work.glob("gpu_check-*.jsonl")
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert rows[0]["scenario"] == "environment" and rows[0]["model_built_s"] > 0
    assert rows[0]["cuda_visible_devices"] == "0" and "--gpus 1" in rows[0]["gpus_note"]
    expected = [r for r in gpu_check.scenarios(CPU_ONLY)]
    by_name = {r["scenario"]: r for r in rows}
    for run in expected:
        if run.kind == "generate":
            for batch in run.batch_sizes:
                row = by_name[f"{run.name} batch {batch}"]
                assert row["status"] == "measured" and row["generated_tokens"] > 0 and row["questions"] == 16
                assert row["logprob_tokens"] == row["generated_tokens"]  # asked as src.infer asks
            continue
        name = next(n for n in by_name if n == run.name or (run.name.endswith("flipped") and "answer_only" in n))
        row = by_name[name]
        assert row["status"] in ("measured", "skipped"), row
        if run.skip and "CUDA" in run.skip:
            assert row["status"] == "skipped" and "CUDA GPU" in row["reason"]
        if row["status"] == "skipped" and not run.skip:
            assert "would not finish" in row["reason"] or "answer_only_logits" in row["reason"]
    dense = by_name["stage2 dense"]
    assert dense["status"] == "measured" and dense["steady_steps"] == 1 and dense["s_per_step"] > 0
    run_dir = work / "runs" / rows[0]["run_id"] / "stage2_dense"
    logged = [r for r in gpu_check.read_logging(run_dir) if "loss" in r]
    assert len(logged) == 2  # the speed above is step 2's alone
    if "step_time_s" in logged[1]:
        assert dense["s_per_step"] == pytest.approx(logged[1]["step_time_s"], abs=1e-3)
    raw = by_name["raw ms-swift stage2 dense"]
    if raw["status"] == "measured":
        assert raw["project_over_raw"] > 0 and "full-logits path" in raw["note"]
    profile = by_name["profile 3 dense steps"]
    assert profile["status"] == "measured" and profile["top_self_cpu"] and 0 <= profile["data_wait_share"] < 1
    assert len(gpu_check.read_logging(work / "runs" / rows[0]["run_id"] / "profile_3_dense_steps")) >= 4
    table = proc.stdout[proc.stdout.index("| scenario |"):]
    for row in rows[1:]:
        assert f"| {row['scenario']} | {row['status']} |" in table

    # A second call on the same work dir reuses the model, keeps the first results, and with no time left
    # skips every scenario, saying so.
    built = (work / "model" / "model.safetensors").stat().st_mtime_ns
    again = _check(work, tmp_path, "--budget_s", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (work / "model" / "model.safetensors").stat().st_mtime_ns == built
    assert jsonl.read_text().splitlines() == [json.dumps(r, ensure_ascii=False) for r in rows]
    [second] = set(work.glob("gpu_check-*.jsonl")) - {jsonl}
    later = [json.loads(x) for x in second.read_text().splitlines()][1:]
    assert later and all(r["status"] == "skipped" for r in later)
    assert all("budget spent" in r["reason"] or "CUDA GPU" in r["reason"] or "answer_only" in r["reason"]
               for r in later)
