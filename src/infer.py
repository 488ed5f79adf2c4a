"""Inference: `python -m src.infer --config CFG --checkpoint CKPT [--jsonl FILE] [--limit N] --out PRED.jsonl`.

Asks the model the question it was trained on (prompt, builder and image settings from the config) about
every record of `--jsonl` (default: `custom.val_jsonl`) and writes one prediction line per record
(src/inference/predictions.py): the raw answer, the objects in pixels with scores, any parse error. An
existing `--out` is refused unless --overwrite, and an output that is one of the files it reads (the config and
its `extends`, the checkpoint's files, the records, `--coco_gt`) always, before anything loads. The engine is
src/inference/engine.py's. `--coco_results PATH` also writes them as COCO results (src/evaluation/coco_files.py:
ids from `--coco_gt`, else from the records).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from src.cli import (
    EXIT_OK,
    UsageError,
    add_config_args,
    add_overwrite_arg,
    make_parser,
    positive_int,
    refuse_existing,
    run_main,
)
from src.config.jsonl import files_to_read
from src.config.loader import load_merged_config
from src.datasets.loading import load_shards
from src.evaluation.coco_files import coco_ids_for, coco_results, write_coco_results
from src.inference.engine import (
    DEFAULT_BATCH_SIZE,
    choose_engine,
    make_engine,
    model_and_adapters,
    predict,
    settle_auto,
)
from src.inference.predictions import write_predictions
from src.training.resolve import resolve_run


def build_parser() -> argparse.ArgumentParser:
    """The command's parser (every flag with its help)."""
    parser = make_parser("python -m src.infer", __doc__)
    add_config_args(parser)
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="an adapter checkpoint (base model from its args.json), a full checkpoint or a merged "
                             "model")
    parser.add_argument("--jsonl", type=Path, help="records to run on (default: the config's custom.val_jsonl)")
    parser.add_argument("--limit", type=positive_int, help="only the first N records")
    parser.add_argument("--out", required=True, type=Path, help="the predictions JSONL to write")
    parser.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=512,
                        help="longest answer generated (dense answers are long)")
    parser.add_argument("--backend", "--engine", dest="backend", choices=["auto", "transformers", "vllm"],
                        default="auto", help="ms-swift inference engine (auto: vLLM where installed with a GPU, else "
                                             "transformers; vllm where it cannot run: exit 2)")
    parser.add_argument("--batch_size", "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"questions sent to the engine per call and generated together (default "
                             f"{DEFAULT_BATCH_SIZE}, sized for a GPU; lower it if generation runs out of memory)")
    parser.add_argument("--gpu_memory_utilization", type=float, default=0.9,
                        help="vLLM only: the share of the GPU's memory it takes (weights, KV cache)")
    parser.add_argument("--tensor_parallel_size", type=positive_int, default=1,
                        help="vLLM only: GPUs one model is split over")
    parser.add_argument("--coco_results", "--coco-results", type=Path,
                        help="also write the predictions as a COCO results JSON ([{image_id, category_id, bbox, "
                             "score}]; a quad as its bounding box)")
    parser.add_argument("--coco_gt", "--coco-gt", type=Path,
                        help="COCO annotation file whose image ids (by file name) and category ids (by name) "
                             "--coco_results uses (default: the number ending each image's file name, the records' "
                             "category_id, else their descs numbered in sorted order: what src.eval reads back)")
    add_overwrite_arg(parser)
    return parser


def _refuse_torn_weights(checkpoint: Path) -> None:
    """UsageError naming a safetensors file of `checkpoint` that is cut short or damaged (read from headers)."""
    from src.training.checkpoint_guard import safetensors_problem

    for weights in sorted(Path(checkpoint).glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise UsageError(f"--checkpoint {checkpoint}: {weights} {problem}. Copy it again from where it was "
                             f"saved, or point --checkpoint at another checkpoint (an earlier checkpoint-N)")


def _checkpoint_files(checkpoint: Path) -> dict[str, Path]:
    """The files directly in `checkpoint` (args.json, the weights, ...), by the flag that names them."""
    if not checkpoint.is_dir():
        return {}
    return {f"--checkpoint ({path})": path for path in sorted(checkpoint.iterdir()) if path.is_file()}


def run(argv: Sequence[str] | None = None) -> int:
    """Predict; raises UsageError/ConfigError/DataError before any model loads when an input is wrong."""
    args = build_parser().parse_args(argv)
    # Every file the command reads, by the flag that names it: an output never replaces one (--overwrite too).
    given = {"--config": args.config, "--base_config": args.base_config, "--coco_gt": args.coco_gt,
             "--checkpoint": args.checkpoint, **_checkpoint_files(args.checkpoint)}
    refuse_existing(args.out, args.overwrite, "predictions", given, output="file")
    if args.coco_results:
        refuse_existing(args.coco_results, args.overwrite, "COCO results", {**given, "--out": args.out},
                        output="file")
    run = resolve_run(args.config, args.base_config, check_paths=False)  # every rule once; its builder below
    cfg = run.cfg
    files = files_to_read(args.jsonl, cfg.custom.val_jsonl, "custom.val_jsonl")
    read = {**{f"--config extends ({f})": f for f in load_merged_config(args.config, args.base_config).files},
            **{f"{'--jsonl' if args.jsonl else 'custom.val_jsonl'} ({f})": f for f in files}}
    # Only the same-path checks now (--overwrite was decided above), before anything heavy loads:
    refuse_existing(args.out, True, "predictions", read)
    if args.coco_results:
        refuse_existing(args.coco_results, True, "COCO results", read)
    model_and_adapters(args.checkpoint)  # a wrong checkpoint is refused before anything heavy loads
    _refuse_torn_weights(args.checkpoint)
    records = load_shards(files, cfg.custom.bad_records)[1][: args.limit]
    if args.coco_results:
        try:
            coco_ids = coco_ids_for(records, args.coco_gt)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(f"--coco_results: {err}") from None
    import torch  # only now: the checks above must not pay for it

    try:
        engine_name = choose_engine(args.backend, importlib.util.find_spec("vllm") is not None,
                                    torch.cuda.is_available())
    except ValueError as err:  # vllm asked for where it cannot run
        raise UsageError(str(err)) from None
    engine_name, note = settle_auto(args.backend, engine_name, cfg, args.checkpoint, batch_size=args.batch_size,
                                    max_new_tokens=args.max_new_tokens,
                                    gpu_memory_utilization=args.gpu_memory_utilization,
                                    tensor_parallel_size=args.tensor_parallel_size)
    if note:
        print(f"note: {note}")
    builder = run.builder
    engine = make_engine(engine_name, cfg, args.checkpoint, args.batch_size, args.max_new_tokens,
                         args.gpu_memory_utilization, args.tensor_parallel_size)
    lines = predict(records, builder, engine, args.max_new_tokens, cfg.custom.emit_norm, batch_size=args.batch_size)
    write_predictions(lines, args.out)
    failures = sum(line.parse_error is not None for line in lines)
    print(f"predictions: {args.out} ({len(records)} records, {failures} with parse errors, engine {engine_name})")
    if args.coco_results:
        results, changed = coco_results(lines, *coco_ids)
        write_coco_results(results, args.coco_results)
        print(f"COCO results: {args.coco_results} ({len(results)} detections"
              + "".join(f", {n} {what}" for what, n in sorted(changed.items())) + ")")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`run` with the project's exit codes: 0 done, 2 bad input (nothing written), 3 a failure."""
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
