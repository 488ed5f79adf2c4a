"""Inference: `python -m src.infer --config CFG --checkpoint CKPT [--jsonl FILE] [--limit N] --out PRED.jsonl`.

The same prompt, builder and image settings as training (from the config), run through ms-swift's
`TransformersEngine`. `CKPT` is an adapter checkpoint (its base model is read from its args.json),
a full checkpoint or a merged model. Each output line holds the record's source, the raw answer,
the parsed objects converted back to pixels of the original image, and any parse error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from src.config import EXIT_CONFIG_ERROR, ConfigError, load_project_config
from src.data_plan import make_preprocessor
from src.datasets.geometry import norm_to_pixel
from src.datasets.loading import DataError, load_split
from src.offline import apply_offline_env
from src.parsing import parse_answer
from src.scoring import object_scores, response_token_logprobs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.infer", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--jsonl", type=Path, help="records to run on (default: custom.val_jsonl)")
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max_new_tokens", type=int, default=512)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_env()
    try:
        cfg = load_project_config(args.config, check_paths=False)
        os.environ.update(cfg.env)
        jsonl = args.jsonl or cfg.custom.val_jsonl
        if not jsonl:
            raise ConfigError("no records to run on: pass --jsonl or set custom.val_jsonl")
        records = load_split(jsonl, cfg.custom.bad_records).records[: args.limit]
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    builder = make_preprocessor(cfg).builder
    model, adapters = model_and_adapters(args.checkpoint)

    from swift import InferRequest, RequestConfig, TransformersEngine  # heavy

    engine = TransformersEngine(model, adapters=adapters, model_type=cfg.swift.get("model_type"),
                                template_type=cfg.swift.get("template"), attn_impl=cfg.swift.get("attn_impl"))
    requests = []
    for record in records:
        row = builder.build([record], with_answer=False)
        requests.append(InferRequest(messages=row["messages"], images=row["images"]))
    responses = engine.infer(requests, RequestConfig(max_tokens=args.max_new_tokens, temperature=0.0, logprobs=True),
                             use_tqdm=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    with args.out.open("w", encoding="utf-8") as fh:
        for record, response in zip(records, responses, strict=True):
            choice = response.choices[0]
            text = choice.message.content or ""
            parsed = parse_answer(text)
            failures += parsed.error is not None
            scores = object_scores(text, *response_token_logprobs(choice.logprobs), len(parsed.objects))
            fh.write(json.dumps({
                "source": f"{record.source.file}:{record.source.line}", "image": record.image,
                "width": record.width, "height": record.height, "raw": text, "parse_error": parsed.error,
                "objects": to_pixel_objects(parsed.objects, scores, record.width, record.height, cfg.custom.emit_norm),
            }, ensure_ascii=False) + "\n")
    print(f"predictions: {args.out} ({len(records)} records, {failures} with parse errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
