"""Evaluation by generation during training, for real (tiny model, ms-swift, CPU): the metrics are logged like
the loss and the predictions kept per step; the evaluation never changes what is trained; two processes (plain
and ZeRO-3) split the answers and give exactly what one process gives. The learning proof
(tests/test_learning_proof.py) shows AP50 climbing to >= 0.9 and the best checkpoint chosen by it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.inference.predictions import read_prediction_rows
from src.training.curves import read_metric_rows
from tests.support.multiprocess import free_port, losses_by_step, train_sh, write_run_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
GROUNDING_KEYS = ("eval_ap", "eval_ap50", "eval_ap75", "eval_precision", "eval_recall", "eval_f1",
                  "eval_parse_failure_rate", "eval_truncated_rate", "eval_generation_seconds")


def _train(root: Path, tmp_path: Path, name: str, *, nproc: int = 1, eval_samples: int = 5, direct: bool = False,
           **sections) -> Path:
    """Train with the evaluation every 2 steps: through train.sh (gpus=cpu), or `direct`ly with `python -m
    src.sft` (then the config's own keys stand, TensorBoard included: train.sh's CPU overlay turns it off)."""
    training = {"eval_strategy": "steps", "eval_steps": 2, **sections.pop("training", {})}
    config = write_run_config(tmp_path, name, workspace=root, training=training,
                              custom={"val_jsonl": str(root / "data" / "train.jsonl")},
                              eval={"samples": eval_samples, "max_new_tokens": 24}, **sections)
    args = [f"config={config}", "gpus=cpu", f"master_port={free_port()}"] + ([f"nproc={nproc}"] if nproc > 1 else [])
    if direct:  # transformers at info level: it says when it loads the best model
        proc = subprocess.run([sys.executable, "-m", "src.sft", "--config", str(config)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600,
                              env={**os.environ, "TRANSFORMERS_VERBOSITY": "info",
                                   # left by something else: the run's own logging_dir must still win
                                   "TENSORBOARD_LOGGING_DIR": str(tmp_path / "stale-tb")})
    else:
        proc = train_sh(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-5000:]
    (tmp_path / f"{name}.log").write_text(proc.stdout)
    return tmp_path / name


def test_metrics_are_logged_like_the_loss_and_never_change_the_training(mp_workspace, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with_eval = _train(mp_workspace, tmp_path, "on", direct=True, training={
        "report_to": ["tensorboard"], "metric_for_best_model": "ap50", "load_best_model_at_end": True})
    without = _train(mp_workspace, tmp_path, "off", eval_samples=0)
    assert losses_by_step(with_eval) == losses_by_step(without) and len(losses_by_step(without)) == 4
    logged = read_metric_rows(with_eval / "logging.jsonl", GROUNDING_KEYS)
    assert all([step for step, _ in logged[key]] == [2, 4] for key in GROUNDING_KEYS), logged
    assert all(0.0 <= value <= 1.0 for key in GROUNDING_KEYS[:-1] for _, value in logged[key])
    assert not read_metric_rows(without / "logging.jsonl", GROUNDING_KEYS)["eval_ap50"]
    console = (tmp_path / "on.log").read_text()
    assert "'eval_ap50':" in console and "'eval_generation_seconds':" in console  # the console line
    assert "Loading best model from" in console and "best checkpoint (by ap50):" in console
    assert not (tmp_path / "stale-tb").exists()
    board = EventAccumulator(json.loads((with_eval / "args.json").read_text())["logging_dir"])
    board.Reload()
    assert [event.step for event in board.Scalars("eval/ap50")] == [2, 4]
    for step in (2, 4):  # the answers of each evaluation, one line per record, readable by src.vis
        rows, bad = read_prediction_rows(with_eval / "eval_predictions" / f"step-{step}.jsonl")
        assert not bad and len(rows) == 5 and all(row["raw"] for row in rows)
    assert not (without / "eval_predictions").exists()


START = {"training": {"eval_on_start": True, "max_steps": 1, "save_strategy": "no"}}


@pytest.fixture(scope="module")
def one_process(mp_workspace, tmp_path_factory) -> Path:
    """One process evaluated at step 0: what the two-process runs must reproduce."""
    return _train(mp_workspace, tmp_path_factory.mktemp("one"), "one", **START)


@pytest.mark.parametrize("deepspeed", [None, "zero3"], ids=["ddp", "zero3"])
def test_two_processes_share_the_answers_and_score_what_one_process_scores(mp_workspace, one_process, tmp_path,
                                                                           deepspeed):
    """Evaluated at step 0 (the same weights everywhere): 5 records over 2 ranks (3 + 2 answers), gathered."""
    extra = {"deepspeed": {"enabled": True, "config": deepspeed}} if deepspeed else {}
    two = _train(mp_workspace, tmp_path, "two", nproc=2, **START, **extra)
    assert "world_size: 2" in (tmp_path / "two.log").read_text()
    first, second = (run / "eval_predictions" / "step-0.jsonl" for run in (one_process, two))
    assert first.read_text() == second.read_text() and len(first.read_text().splitlines()) == 5
    metrics = [dict(read_metric_rows(run / "logging.jsonl", GROUNDING_KEYS[:-1])) for run in (one_process, two)]
    assert metrics[0] == metrics[1]
    sources = [json.loads(line)["source"] for line in first.read_text().splitlines()]
    assert sources == sorted(sources, key=lambda s: int(s.rsplit(":", 1)[1]))  # back in file order
