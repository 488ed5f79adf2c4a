"""Stage 3 (GRPO) end to end on CPU with the real ms-swift: warm-started from a stage-2 adapter through the
project's entry (one process, and two through scripts/train.sh under DeepSpeed ZeRO-3, whose chunked completion
log-probabilities give ms-swift's own loss, KL and gradient norm), the grounding rewards logged to the console,
logging.jsonl and TensorBoard, the grounding metrics at an evaluation, a run killed after its first checkpoint
resumed to its last step, and the resulting adapter merged by `swift export`, answering through `src.infer` and
scored by `src.eval`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.multiprocess import free_port, train_sh, write_run_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
REWARD_KEYS = ("rewards/grounding_format/mean", "rewards/grounding_f1/mean", "rewards/grounding_iou/mean",
               "rewards/grounding_duplicates/mean", "rewards/grounding_count/mean")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # CPU rollouts: 3-6x faster on 2 cores than two threads fighting


@pytest.fixture(scope="module")
def stage2(mp_workspace, tmp_path_factory) -> Path:
    """A stage-2 LoRA checkpoint (2 steps) on the shared tiny model."""
    root = tmp_path_factory.mktemp("stage2")
    config = write_run_config(root, "run", workspace=mp_workspace, training={"max_steps": 2, "save_steps": 2})
    proc = subprocess.run([sys.executable, "-m", "src.sft", "--config", str(config)], cwd=REPO, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return (root / "run" / "checkpoint-2").resolve()


def grpo_config(root: Path, name: str, workspace: Path, stage2: Path, **sections) -> Path:
    rlhf = {"num_generations": 2, "max_completion_length": 24, **sections.pop("rlhf", {})}
    training = {"max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 1, "learning_rate": 1.0e-4,
                "report_to": ["tensorboard"],
                **sections.pop("training", {})}
    return write_run_config(root, name, workspace=workspace, recipe="stage_3_grpo.yaml", run={"init_from": str(stage2)},
                            rlhf=rlhf, training=training, env=ONE_THREAD, **sections)


def _logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines() if line.strip()]


def test_grpo_logs_its_rewards_resumes_after_a_kill_and_its_adapter_answers(mp_workspace, stage2, tmp_path):
    run = tmp_path / "grpo"
    # The warm start merges stage 2 without importing its run's plugin (the image budget is this
    # config's): gone, as when the stage-2 run directory was moved, it changes nothing.
    for plugin in stage2.parent.glob("swift_plugin_*.py"):
        plugin.unlink()
    config = grpo_config(tmp_path, "grpo", mp_workspace, stage2, training={"max_steps": 4})
    killed = subprocess.Popen([sys.executable, "-m", "src.sft", "--config", str(config)], cwd=REPO,
                              env={**os.environ, **ONE_THREAD}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    marker, deadline = run / "checkpoint-1" / "trainer_state.json", time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert killed.poll() is None, "the run ended before it could be killed: " + killed.stdout.read()[-3000:]
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (run / "checkpoint-4").exists()

    resume = grpo_config(tmp_path, "grpo", mp_workspace, stage2, training={"max_steps": 4},
                         tuner={"resume_from_checkpoint": "auto"}, name_suffix="-resume")
    resumed = subprocess.run([sys.executable, "-m", "src.sft", "--config", str(resume)], cwd=REPO, text=True,
                             capture_output=True, timeout=600, env={**os.environ, **ONE_THREAD})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming {run / 'checkpoint-1'}; the run began as a warm start from {stage2}" in resumed.stdout
    # The completions' log-probabilities chunk by chunk (tests/test_completion_logps.py: equal to ms-swift's).
    assert "completion log-probabilities: on (the LM head scores completion tokens in chunks" in resumed.stdout
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]

    # The rewards, the completion lengths and the share cut off: console, logging.jsonl, TensorBoard.
    steps = [row for row in _logged(run) if "loss" in row]
    assert steps and all(key in row for row in steps for key in (*REWARD_KEYS, "completions/mean_length",
                                                                  "completions/clipped_ratio", "kl"))
    assert "'rewards/grounding_f1/mean'" in resumed.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(json.loads((run / "args.json").read_text())["logging_dir"]).Reload()
    assert {f"train/{key}" for key in REWARD_KEYS} <= set(board.Tags()["scalars"])

    checkpoint = run / "checkpoint-4"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not list(checkpoint.glob("model*.safetensors"))
    assert json.loads((checkpoint / "args.json").read_text())["model"] == str(run.resolve() / "init_merged")
    # ms-swift's own CLI takes it as it takes stage 2's: from its args.json alone, offline.
    swift = str(Path(sys.executable).with_name("swift"))
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    export = subprocess.run([swift, "export", "--adapters", str(checkpoint), "--merge_lora", "true", "--output_dir",
                             str(tmp_path / "merged")], cwd=tmp_path, text=True, capture_output=True, env=offline,
                            timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    assert (tmp_path / "merged" / "model.safetensors").is_file()

    predictions, metrics = tmp_path / "pred.jsonl", tmp_path / "metrics.json"
    data = mp_workspace / "data" / "train.jsonl"
    for argv in (["-m", "src.infer", "--config", str(config), "--checkpoint", str(checkpoint), "--jsonl", str(data),
                  "--limit", "2", "--max_new_tokens", "16", "--out", str(predictions)],
                 ["-m", "src.eval", "--pred", str(predictions), "--gt", str(data), "--out", str(metrics)]):
        step = subprocess.run([sys.executable, *argv], cwd=REPO, text=True, capture_output=True, timeout=600)
        assert step.returncode == 0, step.stdout[-3000:] + step.stderr[-3000:]
    assert json.loads(metrics.read_text())["n_pred_rows"] == 2


def _figures(run: Path) -> list[tuple[float, ...]]:
    return [(row["loss"], row["kl"], row["grad_norm"]) for row in _logged(run) if "loss" in row]


def test_grpo_runs_in_two_processes_under_zero3_evaluates_and_equals_ms_swift_s_path(mp_workspace, stage2, tmp_path):
    # DeepSpeed ZeRO-3 partitions the output layer's weight: the armed head computes inside the layer's forward,
    # where DeepSpeed has gathered it. The tiny model's completions all earn the same rewards (no advantage, so
    # no gradient from them): a LoRA that is not zero at the start makes the policy differ from the reference
    # (the adapter off), so the KL, the loss and the gradient are not zero from the first step.
    common = {"deepspeed": {"enabled": True, "config": "zero3"}, "tuner": {"init_weights": "false"}}
    config = grpo_config(tmp_path, "two", mp_workspace, stage2, **common,
                         training={"max_steps": 2, "save_steps": 2, "eval_strategy": "steps", "eval_steps": 2,
                                   "per_device_eval_batch_size": 1},
                         custom={"val_jsonl": str(mp_workspace / "data" / "val.jsonl")},
                         eval={"samples": 2, "max_new_tokens": 16})
    proc = train_sh([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path,
                    env=ONE_THREAD)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.count("completion log-probabilities: on") == 1  # rank 0 says it; both ranks use it
    assert "ms-swift's path for this model" not in proc.stdout
    steps = [row for row in _logged(tmp_path / "two") if "loss" in row]
    assert [row["global_step/max_steps"] for row in steps] == ["1/2", "2/2"]
    assert all(key in steps[0] for key in REWARD_KEYS)
    assert (tmp_path / "two" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    # At the evaluation: ms-swift's rollouts on the validation prompts (rewards), and the grounding metrics by
    # generation (src/training/generation_eval.py), as in SFT.
    evaluated = {key for row in _logged(tmp_path / "two") for key in row if key.startswith("eval_")}
    assert {"eval_rewards/grounding_f1/mean", "eval_ap50", "eval_parse_failure_rate"} <= evaluated
    assert (tmp_path / "two" / "eval_predictions" / "step-2.jsonl").is_file()

    # The same two steps through ms-swift's own full-vocabulary path (no evaluation: it comes after step 2's log).
    config = grpo_config(tmp_path, "two_swift", mp_workspace, stage2, **common, custom={"completion_logps": False},
                         training={"max_steps": 2, "save_strategy": "no", "report_to": []})
    proc = train_sh([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path,
                    env=ONE_THREAD)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.count("completion log-probabilities: off (custom.completion_logps: false)") == 1
    mine, theirs = _figures(tmp_path / "two"), _figures(tmp_path / "two_swift")
    assert len(mine) == 2 and all(kl > 0 and grad_norm > 0 for _, kl, grad_norm in mine)
    for step, ours in zip(mine, theirs, strict=True):
        assert ours == pytest.approx(step, abs=1e-6)
