"""The heavy half of training: ms-swift's own `SwiftSft`, fed with the project's data.

Imported only after the config and data are valid (it pulls in torch and transformers).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from datasets import Dataset as HfDataset
from swift import SftArguments
from swift.pipelines.train.sft import SwiftSft
from transformers import TrainerCallback

from src.config import ProjectConfig
from src.config.remote_code import apply_remote_code_policy
from src.datasets.builders import ROW_SOURCE_KEY
from src.datasets.health import check_rows, checking_every_sample, format_failures
from src.datasets.map_procs import in_process_num_proc
from src.datasets.plan import DataPlan
from src.datasets.rows import BadImages, GroundingRowsDataset, SampleLog, arrow_rows
from src.training.checkpoint_guard import check_adapter_checkpoint
from src.training.distributed import Failure, Job
from src.training.generation_eval import GroundingEvaluation, with_grounding_metrics
from src.training.step_accounting import StepAccounting
from src.training.swift_plugin import copy_into_checkpoint

EXIT_HEALTH_CHECK = 2


class EpochToDatasets(TrainerCallback):
    """Tells the datasets which epoch starts, so augmentation draws anew each epoch; opens the sample log
    (GROUNDING_SAMPLE_LOG) of the training dataset when training begins."""

    def __init__(self, datasets: list[GroundingRowsDataset], rank: int):
        self.datasets = datasets
        self.rank = rank

    def on_train_begin(self, args, state, control, **kwargs):
        if self.datasets:
            self.datasets[0].sample_log = SampleLog.from_env(self.rank)

    def on_epoch_begin(self, args, state, control, **kwargs):
        for dataset in self.datasets:
            dataset.epoch = math.floor((state.epoch or 0) + 1e-6)


class AdapterCheckpointGuard(TrainerCallback):
    """Fails the run loudly when a LoRA checkpoint it just saved holds base-model weights."""

    def __init__(self, modules_to_save: list[str] | None):
        self.modules_to_save = modules_to_save

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        problems = check_adapter_checkpoint(checkpoint, self.modules_to_save) if checkpoint.is_dir() else []
        if problems:
            raise RuntimeError("LoRA checkpoint guard: " + "; ".join(problems))


class PluginIntoCheckpoint(TrainerCallback):
    """Copies the run's image-budget plugin into each checkpoint it saves (rank 0), so that the checkpoint
    carries what the model sees even when moved on its own (src/training/swift_plugin.py)."""

    def __init__(self, plugins: list[str] | str | None):
        self.plugins = plugins

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            copy_into_checkpoint(checkpoint, self.plugins)


def naming_the_record(encode):
    """`encode` whose exceptions carry a note naming the record(s) the failing row was built from.

    ms-swift encodes rows in the dataloader (lazy tokenisation); an image that passed the header check
    but cannot be decoded fails there, on whichever rank drew it, with no word of which record it was.
    With the wrapper's `bad_images` set (src/datasets/rows.py `BadImages`), such an image follows
    `custom.bad_records` instead: skip lists the record and encodes another sample, error names it.
    """

    @functools.wraps(encode)
    def encode_naming_the_record(row, *args, **kwargs):
        while True:
            try:
                return encode(row, *args, **kwargs)
            except Exception as err:
                bad_images = encode_naming_the_record.bad_images
                replacement = bad_images.recover(row) if bad_images is not None else None
                if replacement is None:
                    images = [im for im in row.get("images", []) if isinstance(im, str)]
                    err.add_note(f"while encoding the sample built from {row.get(ROW_SOURCE_KEY, '?')}"
                                 + (f" (images: {', '.join(images)})" if images else ""))
                    raise
                row = replacement

    encode_naming_the_record.bad_images = None
    return encode_naming_the_record


class GroundingSft(SwiftSft):
    """`SwiftSft` whose datasets come from the project's data plan instead of ms-swift's loaders.

    With lazy tokenisation (ms-swift's default for Qwen3-VL) rows are built per sample by
    `GroundingRowsDataset`; otherwise (packing) the eagerly built rows go in as a datasets.Dataset.
    Before training, rank 0 encodes and checks the first samples (src/datasets/health.py) and the job agrees on
    the verdict. Everything else (model, template, tuner, trainer, saving) is ms-swift's, unchanged.
    """

    def __init__(self, args: SftArguments, cfg: ProjectConfig, plan: DataPlan, augment_ops: list,
                 job: Job | None = None):
        self._cfg, self._plan, self._augment_ops, self._job = cfg, plan, augment_ops, job or Job()
        self._lazy_datasets: list[GroundingRowsDataset] = []
        self.evaluation = (GroundingEvaluation.for_run(cfg, plan, self._job, Path(args.output_dir))
                           if plan.eval_records else None)
        super().__init__(args)

    def _get_dataset(self):
        plan, custom = self._plan, self._cfg.custom
        # Every sample the dataloader encodes is checked cheaply (image tokens, no control token in the answer).
        self.template.encode = naming_the_record(checking_every_sample(
            self.template.encode, self.template.tokenizer, self.processor.image_processor.merge_size))
        if self.args.lazy_tokenize:
            train = GroundingRowsDataset(plan.train_samples, plan.builder, augment_ops=self._augment_ops,
                                         augment_prob=custom.augment_prob, seed=self.args.data_seed,
                                         world_size=self._job.world_size)
            self._report_padding(train)
            val = (GroundingRowsDataset(plan.val_samples, plan.builder)
                   if plan.val_samples else None)
            self._lazy_datasets = [d for d in (train, val) if d is not None]
            # An image that fails to decode in training follows custom.bad_records (skip: listed, another sample).
            bad_images = BadImages(custom.bad_records, Path(self.args.output_dir) / "skipped_records.jsonl",
                                   self._job.rank)
            for dataset in self._lazy_datasets:
                dataset.bad_images = bad_images
            self.template.encode.bad_images = bad_images
            self._check_health(train)
            return train, val
        # ms-swift encodes these up front (packing): images as the project loader reads them. The health
        # check waits until that is done (see _encode_dataset).
        rows = GroundingRowsDataset(plan.train_samples, plan.builder, world_size=self._job.world_size)
        self._report_padding(rows)
        train = HfDataset.from_list(arrow_rows(rows))
        val = (HfDataset.from_list(arrow_rows(GroundingRowsDataset(plan.val_samples, plan.builder)))
               if plan.val_samples else None)
        return train, val

    def _encode_dataset(self, train_dataset, val_dataset, pre_process=True):
        # Encoding here first: ms-swift's datasets.map forks worker processes, and a fork after this
        # process has run torch's image ops (as the health check does) deadlocks the worker's OpenMP; and it
        # encodes in this process unless the user asked for workers (src/datasets/map_procs.py).
        asked = self.args.dataset_num_proc
        self.args.dataset_num_proc = in_process_num_proc(asked)
        try:
            encoded = super()._encode_dataset(train_dataset, val_dataset, pre_process=pre_process)
        finally:
            self.args.dataset_num_proc = asked  # args.json and the rest of the run keep the user's value
        if not self.args.lazy_tokenize:
            self._check_health(train_dataset)
        return encoded

    def _report_padding(self, train: GroundingRowsDataset) -> None:
        if train.padding:
            self._print(f"data: {len(train.samples)} training samples over {self._job.world_size} ranks: "
                        f"{train.padding} of them are repeated each epoch so that every sample is trained")

    def _print(self, message: str) -> None:
        if self._job.is_main:
            print(message, flush=True)

    def _check_health(self, rows) -> None:
        """Rank 0 checks, every rank learns the verdict: a failure ends the job (JobFailed) on every rank."""
        limit = self._cfg.custom.health_check_samples
        if limit <= 0:
            return
        failure = None
        if self._job.is_main:
            failures = check_rows(rows, self.template.encode, self.template.tokenizer,
                                  merge_size=self.processor.image_processor.merge_size,
                                  emit_norm=self._cfg.custom.emit_norm,
                                  grounding=self._plan.builder.answers_with_geometry, limit=limit)
            if failures:
                failure = Failure(EXIT_HEALTH_CHECK, f"health check failed on {len(failures)} of the first "
                                                     f"{limit} samples:\n" + format_failures(failures))
        self._job.agree(failure)
        self._print(f"health check: the first {min(limit, len(rows))} samples encode as built (image tokens, "
                    f"labels, coordinates)")

    def train(self, trainer):
        if self._lazy_datasets:
            trainer.add_callback(EpochToDatasets(self._lazy_datasets, self._job.rank))
        if self.args.tuner_type == "lora":
            trainer.add_callback(AdapterCheckpointGuard(self.args.modules_to_save))
        trainer.add_callback(PluginIntoCheckpoint(self.args.external_plugins))
        if self.evaluation is not None:
            trainer.evaluate = with_grounding_metrics(trainer.evaluate, trainer, self.evaluation)
        if self._cfg.custom.answer_only_logits and not self._cfg.reinforcement:
            from src.training.answer_logits import install

            self.answer_head, decision = install(trainer)  # SFT only: GRPO computes its own log-probabilities
            self._print(decision)
        # Step time, data wait, tokens, memory and MFU on every training log line (src/training/step_accounting.py).
        StepAccounting(self._print, bool(self.args.gradient_checkpointing),
                       bool(getattr(self.args, "vit_gradient_checkpointing", False))).install(trainer)
        return super().train(trainer)


def run_training(sft_kwargs: dict[str, Any], cfg: ProjectConfig, plan: DataPlan, augment_ops: list,
                 job: Job) -> dict[str, Any]:
    """Build `SftArguments(**sft_kwargs)` and train; return ms-swift's result dict
    (`last_model_checkpoint`, `best_model_checkpoint`, `best_metric`, `global_step`, `log_history`, ...).

    With `plan.eval_records`, each evaluation also answers them and logs AP (src/training/generation_eval.py).
    Raises JobFailed (on every rank) when the health check fails."""
    apply_remote_code_policy()  # no code from the model directory runs unless the config trusts it
    args = SftArguments(**sft_kwargs)
    return GroundingSft(args, cfg, plan, augment_ops, job).main()
