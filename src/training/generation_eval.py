"""Grounding metrics during training: at each evaluation the model being trained answers a fixed subset of the
validation records, and AP is computed, with the code `python -m src.infer` and `python -m src.eval` run
(`src.inference.engine.predict`, `src.evaluation.metrics.evaluate`), not a copy of it.

- Greedy decoding with `eval.max_new_tokens`; the share of answers cut off is reported.
- Questions go to the engine `eval.batch_size` at a time. `eval.backend: transformers` generates with the
  trained model itself; `vllm` with a vLLM engine beside it given the trained weights each time
  (src/training/vllm_eval.py).
- In a job of several processes each rank answers every world_size-th record, the answers are gathered on
  every rank and each computes the same metrics (so every rank takes the same best-checkpoint decision);
  rank 0 writes them to `eval_predictions/step-N.jsonl` for `python -m src.vis`.
- Under ZeRO-3 the parameters are gathered for generation (ms-swift's own way, `unwrap_model_for_generation`).
- The training's random state is saved before and restored after, so a run with the evaluation trains the
  same losses as one without it.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.datasets.builders import BaseBuilder
from src.datasets.contract import Record
from src.evaluation.metrics import evaluate
from src.inference.engine import DEFAULT_BATCH_SIZE, predict
from src.inference.predictions import PredictionLine, write_predictions
from src.training.distributed import Job
from src.training.run_dir import EVAL_PREDICTIONS

# What is logged (as eval_<name>): the class-agnostic metrics of src.eval, then the answers' health.
LOGGED = {"ap": "AP", "ap50": "AP50", "ap75": "AP75", "precision": "precision", "recall": "recall", "f1": "f1"}


def logged_metrics(metrics: dict[str, Any], lines: Sequence[PredictionLine], seconds: float) -> dict[str, float]:
    """The numbers logged beside the loss (without the `eval_` prefix) from `evaluate`'s result: AP, AP50, AP75,
    precision / recall / F1 at IoU 0.5 (class-agnostic), the parse-failure and cut-off rates, the wall time."""
    agnostic = metrics["class_agnostic"]
    out = {name: float(agnostic[key] or 0.0) for name, key in LOGGED.items()}
    out["parse_failure_rate"] = float(metrics["parse_failure_rate"] or 0.0)
    out["truncated_rate"] = sum(line.truncated for line in lines) / len(lines) if lines else 0.0
    out["generation_seconds"] = round(seconds, 3)
    return out


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Python's, numpy's and torch's random states (CPU and every GPU) as they were on entry, on exit."""
    import torch

    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
        if saved[3] is not None:
            torch.cuda.set_rng_state_all(saved[3])


@contextlib.contextmanager
def generation_mode(trainer) -> Iterator[Any]:  # noqa: ANN001 - ms-swift's trainer
    """The trainer's model ready to generate (ZeRO-3 parameters gathered, eval mode, no packing), as
    ms-swift's own `predict_with_generate` prepares it; everything restored on exit."""
    from swift.utils import unwrap_model_for_generation

    template, model = trainer.template, trainer.model
    packing, padding_free, was_training = template.packing, template.padding_free, model.training
    template.packing = template.padding_free = False
    model.eval()
    try:
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         gather_deepspeed3_params=True), template.generate_context():
            yield model
    finally:
        template.packing, template.padding_free = packing, padding_free
        model.train(was_training)


def new_predictions_path(folder: Path, step: int) -> Path:
    """`step-N.jsonl`, or `step-N.2.jsonl`... when a resumed run evaluates a step again: never overwritten."""
    path, k = folder / f"step-{step}.jsonl", 1
    while path.exists():
        k += 1
        path = folder / f"step-{step}.{k}.jsonl"
    return path


@dataclass(slots=True)
class GroundingEvaluation:
    """Answers `records` with the model being trained and scores them (see the module docstring)."""

    records: list[Record]
    builder: BaseBuilder
    emit_norm: str
    max_new_tokens: int
    iou_type: str
    job: Job
    output_dir: Path
    batch_size: int = DEFAULT_BATCH_SIZE  # questions per engine call (`eval.batch_size`)
    vllm_kwargs: dict[str, Any] | None = None  # `eval.backend: vllm`: VllmEngine's (vllm_eval.eval_engine_kwargs)
    _engine: Any = None  # ms-swift's engine, made at the first evaluation

    def share(self) -> list[int]:
        """Indices of the records this rank answers: every world_size-th, starting at its rank."""
        return list(range(self.job.rank, len(self.records), self.job.world_size))

    @classmethod
    def for_run(cls, cfg, plan, job: Job, output_dir: Path) -> GroundingEvaluation:  # noqa: ANN001
        """The evaluation a run's config asks for (`eval:`), on the plan's evaluation records."""
        vllm_kwargs = None
        if cfg.eval.backend == "vllm":
            from src.training.vllm_eval import eval_engine_kwargs

            vllm_kwargs = eval_engine_kwargs(cfg, job)
        return cls(plan.eval_records, plan.builder, cfg.custom.emit_norm, cfg.eval.max_new_tokens,
                   cfg.eval.iou_type, job, output_dir, batch_size=cfg.eval.batch_size, vllm_kwargs=vllm_kwargs)

    def engine_for(self, trainer, model):  # noqa: ANN001 - ms-swift's trainer, the model ready to generate
        """The engine that answers this evaluation: ms-swift's TransformersEngine on `model`, generating
        `batch_size` questions at once (remade when the trainer's model object changes); or the vLLM engine,
        made once, with `model`'s current weights loaded."""
        if self.vllm_kwargs is not None:
            from src.training.vllm_eval import load_trained_weights, make_eval_engine

            if self._engine is None:
                self._engine = make_eval_engine(self.vllm_kwargs)
            load_trained_weights(self._engine, model)
            return self._engine
        from swift import TransformersEngine

        if self._engine is None or self._engine.model is not model:
            self._engine = TransformersEngine(model, template=trainer.template, max_batch_size=self.batch_size)
        return self._engine

    def __call__(self, trainer, step: int) -> dict[str, float]:  # noqa: ANN001 - ms-swift's trainer
        """Generate, gather, score; write the predictions (rank 0); return the logged metrics."""
        start = time.perf_counter()
        mine = self.share()
        # Every rank makes the same number of generate calls: under ZeRO-3 transformers generates with
        # synced_gpus, whose per-token collective would wait forever for a rank that has finished. A rank
        # without a record of its own answers the first one; the extra answers are dropped.
        asked = [self.records[i] for i in mine] or self.records[:1]
        with random_state_kept(), generation_mode(trainer) as model:
            engine = self.engine_for(trainer, model)
            lines = predict(asked, self.builder, engine, self.max_new_tokens, self.emit_norm, use_tqdm=False,
                            agree_on_calls=lambda n: max(self.job.gather(n)), batch_size=self.batch_size)[:len(mine)]
        answered = sorted(((i, line) for part in self.job.gather(list(zip(mine, lines, strict=True)))
                           for i, line in part), key=lambda pair: pair[0])
        lines = [line for _, line in answered]
        metrics = evaluate(lines, self.records, iou_type=self.iou_type)  # the lines as they are: no JSON between
        logged = logged_metrics(metrics, lines, time.perf_counter() - start)
        if self.job.is_main:
            folder = self.output_dir / EVAL_PREDICTIONS
            folder.mkdir(parents=True, exist_ok=True)
            write_predictions(lines, new_predictions_path(folder, step))
        return logged


def with_grounding_metrics(evaluate_fn, trainer, evaluation: GroundingEvaluation):  # noqa: ANN001
    """`trainer.evaluate` that also runs `evaluation` and adds its metrics (as `<prefix>_ap50`, ...) to the
    returned metrics, where `metric_for_best_model` finds them, and logs them like the loss."""

    def evaluate_with_grounding(*args, **kwargs):
        metrics = evaluate_fn(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        grounding = {f"{prefix}_{k}": v for k, v in evaluation(trainer, trainer.state.global_step).items()}
        trainer.log(grounding)
        metrics.update(grounding)
        return metrics

    return evaluate_with_grounding


def best_checkpoint_report(result: dict[str, Any], metric: str | None) -> str | None:
    """The line the run ends with when it chose a best checkpoint: its step, the metric it was chosen by and
    every metric logged at that evaluation (from ms-swift's result: `best_model_checkpoint`, `log_history`)."""
    checkpoint = result.get("best_model_checkpoint")
    if not checkpoint or not metric:
        return None
    step = int(Path(os.path.realpath(checkpoint)).name.rsplit("-", 1)[-1])
    logged: dict[str, Any] = {}
    for row in result.get("log_history") or []:
        if row.get("step") == step:
            logged.update(row)
    names = ("loss", *LOGGED, "parse_failure_rate", "truncated_rate", "generation_seconds")
    shown = ", ".join(f"{name} {logged[f'eval_{name}']:.4g}" for name in names
                      if isinstance(logged.get(f"eval_{name}"), (int, float)))
    return f"best checkpoint (by {metric}): {checkpoint} at step {step}" + (f": {shown}" if shown else "")
