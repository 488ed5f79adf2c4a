"""Inference: `python -m src.infer --config CFG --checkpoint CKPT [--jsonl FILE] [--limit N] --out PRED.jsonl`.

The same prompt, builder and image settings as training (from the config), run through ms-swift's
`TransformersEngine`. `CKPT` is an adapter checkpoint (its base model is read from its args.json),
a full checkpoint or a merged model. Each output line holds the record's source, the raw answer,
the parsed objects converted back to pixels of the original image, and any parse error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from src.config import EXIT_CONFIG_ERROR, ConfigError
from src.datasets.answer import parse_answer
from src.datasets.geometry import norm_to_pixel
from src.datasets.loading import DataError, load_split
from src.datasets.plan import make_preprocessor
from src.datasets.run_config import load_config_for_run
from src.inference.scoring import object_scores, response_token_logprobs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.infer", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--jsonl", type=Path, help="records to run on (default: custom.val_jsonl)")
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--engine", choices=["auto", "transformers", "vllm"], default="auto",
                        help="ms-swift inference engine (auto: vLLM where installed with a GPU, else transformers)")
    return parser.parse_args(argv)


def model_and_adapters(checkpoint: Path) -> tuple[str, list[str]]:
    """(base model dir, adapters) for a checkpoint: an adapter's base comes from its args.json."""
    checkpoint = checkpoint.resolve()
    if (checkpoint / "adapter_config.json").is_file():
        args = json.loads((checkpoint / "args.json").read_text(encoding="utf-8"))
        return str(args["model"]), [str(checkpoint)]
    return str(checkpoint), []


def to_pixel_objects(parsed_objects: list[dict], scores: list[float], width: int, height: int,
                     norm: str) -> list[dict]:
    """Parsed objects with their coordinates mapped from the answer's space back to image pixels, and scores."""
    out = []
    for obj, score in zip(parsed_objects, scores, strict=True):
        pixels = norm_to_pixel(np.asarray(obj["coords"], dtype=float), width, height, norm)
        out.append({"kind": obj["kind"], "points": [round(float(v), 2) for v in np.asarray(pixels).ravel()],
                    "desc": obj["label"], "score": round(score, 6)})
    return out


def choose_engine(requested: str, vllm_installed: bool, cuda_available: bool) -> str:
    """"transformers" or "vllm": `auto` takes vLLM where it is installed and a GPU is there.

    Raises ValueError when vllm is requested but cannot run here.
    """
    if requested == "transformers":
        return "transformers"
    can_vllm = vllm_installed and cuda_available
    if requested == "vllm" and not can_vllm:
        raise ValueError("--engine vllm needs the vllm package and a CUDA GPU"
                         f" ({'no GPU' if vllm_installed else 'vllm is not installed'}); use --engine transformers")
    return "vllm" if can_vllm else "transformers"


def make_engine(name: str, cfg, checkpoint: Path):
    """An ms-swift inference engine for `checkpoint` (adapter, full or merged), configured like training."""
    model, adapters = model_and_adapters(checkpoint)
    kwargs = {"adapters": adapters, "model_type": cfg.swift.get("model_type"),
              "template_type": cfg.swift.get("template")}
    if name == "vllm":
        from swift import VllmEngine  # heavy; GPU machines only

        return VllmEngine(model, enable_lora=bool(adapters), **kwargs)
    from swift import TransformersEngine  # heavy

    return TransformersEngine(model, attn_impl=cfg.swift.get("attn_impl"), **kwargs)


def predict(records: list, builder, engine, max_new_tokens: int, emit_norm: str) -> list[dict]:
    """One prediction line per record: every question the builder asks about it (one for dense
    grounding, one per description for the grounding scheme), answers parsed, objects in pixels."""
    from swift import InferRequest, RequestConfig  # heavy

    asked = [(i, focus) for i, record in enumerate(records) for focus in builder.focuses([record])]
    requests = []
    for i, focus in asked:
        row = builder.build([records[i]], with_answer=False, **focus)
        requests.append(InferRequest(messages=row["messages"], images=row["images"]))
    responses = engine.infer(requests, RequestConfig(max_tokens=max_new_tokens, temperature=0.0, logprobs=True),
                             use_tqdm=True)
    lines = [{"source": f"{r.source.file}:{r.source.line}", "image": r.image, "width": r.width, "height": r.height,
              "raw": [], "parse_error": None, "objects": []} for r in records]
    for (i, _), response in zip(asked, responses, strict=True):
        choice, record, line = response.choices[0], records[i], lines[i]
        text = choice.message.content or ""
        parsed = parse_answer(text)
        scores = object_scores(text, *response_token_logprobs(choice.logprobs), len(parsed.objects))
        line["raw"].append(text)
        if parsed.error:
            line["parse_error"] = "; ".join(filter(None, [line["parse_error"], parsed.error]))
        line["objects"] += to_pixel_objects(parsed.objects, scores, record.width, record.height, emit_norm)
    for line in lines:
        line["raw"] = line["raw"][0] if len(line["raw"]) == 1 else "\n".join(line["raw"])
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config_for_run(args.config, check_paths=False)
        jsonl = args.jsonl or cfg.custom.val_jsonl
        if not jsonl:
            raise ConfigError("no records to run on: pass --jsonl or set custom.val_jsonl")
        records = load_split(jsonl, cfg.custom.bad_records).records[: args.limit]
        import torch  # only now: the checks above must not pay for it

        engine_name = choose_engine(args.engine, importlib.util.find_spec("vllm") is not None,
                                    torch.cuda.is_available())
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    builder = make_preprocessor(cfg).builder
    engine = make_engine(engine_name, cfg, args.checkpoint)
    lines = predict(records, builder, engine, args.max_new_tokens, cfg.custom.emit_norm)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    failures = sum(line["parse_error"] is not None for line in lines)
    print(f"predictions: {args.out} ({len(records)} records, {failures} with parse errors, engine {engine_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
