"""Inference (`python -m src.infer` runs it): the same prompt, builder and image settings as training (from
the config), through ms-swift's `TransformersEngine` (or vLLM on a GPU where installed).

A checkpoint is an adapter checkpoint (its base model is read from its args.json), a full checkpoint or a
merged model. Each record gives one `PredictionLine` (src/inference/predictions.py): the raw answer, the
parsed objects back in pixels of the original image with scores, and what the parser saw.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from src.config import ConfigError
from src.datasets.builders import read_answer
from src.datasets.images import model_input
from src.inference.predictions import PredictionLine
from src.inference.scoring import object_scores, response_token_logprobs

# Questions per engine call (`--batch_size`, `eval.batch_size`): their images are decoded just before, so a
# large --jsonl is never held in memory at once. 64 because greedy decoding on a GPU reads every weight once
# per step whatever the batch, so tokens/s grows almost with the batch up to a few dozen sequences (a 2B
# model's 4 GB of bf16 weights against 64 short KV caches); beyond that the KV caches take the memory instead
# (the scores keep no logits: fast_logprobs.StepLogprobs).
DEFAULT_BATCH_SIZE = 64
IMAGES_PER_QUESTION = 1  # every question shows one record's image (`questions` asks about one record at a time)


def model_and_adapters(checkpoint: Path) -> tuple[str, list[str]]:
    """(base model dir, adapters) for a checkpoint: an adapter's base comes from its args.json.

    Raises ConfigError for a path that is not a checkpoint or an adapter whose base cannot be found."""
    checkpoint = checkpoint.resolve()
    if (checkpoint / "adapter_config.json").is_file():
        args_file = checkpoint / "args.json"
        if not args_file.is_file():
            raise ConfigError(f"--checkpoint {checkpoint}: an adapter without args.json, so its base model is "
                              f"unknown; point --checkpoint at a checkpoint ms-swift saved, or merge it first "
                              f"(swift export --adapters ... --merge_lora true)")
        base = json.loads(args_file.read_text(encoding="utf-8")).get("model")
        if not base or not Path(base).is_dir():
            raise ConfigError(f"--checkpoint {checkpoint}: its args.json names the base model {base!r}, which "
                              f"is not a directory here")
        return str(base), [str(checkpoint)]
    if not (checkpoint / "config.json").is_file():
        raise ConfigError(f"--checkpoint {checkpoint}: not a checkpoint (no adapter_config.json or config.json)")
    return str(checkpoint), []


VLLM_INSTALL = ("pip install vllm (ms-swift 4.6 is tested with vllm 0.11.0 and 0.23.0; take the release built "
                "for the installed torch)")


def choose_engine(requested: str, vllm_installed: bool, cuda_available: bool, option: str = "--backend") -> str:
    """"transformers" or "vllm": `auto` takes vLLM where it is installed and a GPU is there.

    Raises ValueError naming `option`, the reason and how to install vllm when vllm is requested but cannot
    run here.
    """
    if requested == "transformers":
        return "transformers"
    can_vllm = vllm_installed and cuda_available
    if requested == "vllm" and not can_vllm:
        reason = "no CUDA GPU is visible" if vllm_installed else f"vllm is not installed; {VLLM_INSTALL}"
        raise ValueError(f"{option} vllm needs the vllm package and a CUDA GPU ({reason}); or use {option} "
                         f"transformers")
    return "vllm" if can_vllm else "transformers"


def settle_auto(requested: str, chosen: str, cfg, checkpoint: Path, **vllm_settings) -> tuple[str, str | None]:
    """(engine, note): `chosen` (`choose_engine`'s answer), except that `--backend auto` falls back to the
    transformers engine, saying why in the note, where vLLM cannot serve this checkpoint (a stage-2 adapter
    with modules_to_save, remote code, ...: see `vllm_kwargs_for`, given `vllm_settings`). An explicit
    `vllm` is never changed: its refusal is the user's to read."""
    if requested != "auto" or chosen != "vllm":
        return chosen, None
    try:
        vllm_kwargs_for(cfg, checkpoint, **vllm_settings)
    except ConfigError as err:
        return "transformers", f"--backend auto: vLLM cannot serve this checkpoint, so the transformers engine " \
                               f"runs it ({err})"
    return chosen, None


def vllm_kwargs_for(cfg, checkpoint: Path, batch_size: int = DEFAULT_BATCH_SIZE, max_new_tokens: int = 512,
                    gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1) -> dict:
    """The `VllmEngine` kwargs `make_engine` uses for `checkpoint` (reads its adapter's config; imports nothing
    heavy). Raises ConfigError for a checkpoint or adapter vLLM cannot load (see `vllm_args`), and for a model
    directory that ships code (`auto_map`) the config does not trust: ms-swift hands vLLM
    `trust_remote_code=True`, and vLLM may load the model in a process of its own, out of the policy's reach."""
    from src.config.remote_code import TRUST_ENV, remote_code_files, remote_code_trusted

    from .vllm_args import max_model_len, read_adapter_config, vllm_engine_kwargs

    model, adapters = model_and_adapters(checkpoint)
    shipped = [] if remote_code_trusted() else remote_code_files(model)
    if shipped:
        raise ConfigError(f"--checkpoint {checkpoint}: the model {model} ships code ({', '.join(shipped)} name it "
                          f"in auto_map) and vLLM would run it; use --backend transformers (which never runs it), "
                          f"or trust it with `env: {{{TRUST_ENV}: \"1\"}}` in the config")
    return vllm_engine_kwargs(
        model, adapters, read_adapter_config(adapters), model_type=cfg.swift.get("model_type"),
        template_type=cfg.swift.get("template"), max_model_len=max_model_len(cfg, max_new_tokens),
        images_per_prompt=IMAGES_PER_QUESTION, batch_size=batch_size,
        gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size)


def make_engine(name: str, cfg, checkpoint: Path, batch_size: int = DEFAULT_BATCH_SIZE,
                max_new_tokens: int = 512, gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1):
    """An ms-swift inference engine for `checkpoint` (adapter, full or merged), configured like training.

    The transformers engine generates `batch_size` questions per `generate` call; vLLM's gets
    `vllm_kwargs_for` (at most `batch_size` sequences at once), computed before vllm is imported so that an
    adapter it cannot load is refused first."""
    from src.config.remote_code import apply_remote_code_policy

    if name == "vllm":
        kwargs = vllm_kwargs_for(cfg, checkpoint, batch_size, max_new_tokens, gpu_memory_utilization,
                                 tensor_parallel_size)
        apply_remote_code_policy()  # the processor ms-swift loads in this process, too
        from swift import VllmEngine  # heavy; GPU machines only

        return VllmEngine(**kwargs)
    import torch  # heavy
    from swift import TransformersEngine

    apply_remote_code_policy()  # no code from the model directory runs unless the config trusts it

    model, adapters = model_and_adapters(checkpoint)
    dtype = cfg.swift.get("torch_dtype")  # as trained (float32 on CPU); else ms-swift picks bf16 even there
    return TransformersEngine(model, adapters=adapters, model_type=cfg.swift.get("model_type"),
                              template_type=cfg.swift.get("template"), attn_impl=cfg.swift.get("attn_impl"),
                              torch_dtype=getattr(torch, dtype) if isinstance(dtype, str) else None,
                              max_batch_size=batch_size)


def questions(records: list, builder) -> tuple[list[tuple[int, dict[str, str]]], list]:
    """Every question the builder asks about the records, as (record index, focus) and ms-swift
    `InferRequest`s naming their images by path (`as_seen` loads them)."""
    from swift import InferRequest  # heavy

    asked = [(i, focus) for i, record in enumerate(records) for focus in builder.focuses([record])]
    requests = []
    for i, focus in asked:
        row = builder.build([records[i]], with_answer=False, **focus)
        requests.append(InferRequest(messages=row["messages"], images=list(row["images"])))
    return asked, requests


def as_seen(request):
    """The request with its images as `model_input` gives them: a turned JPEG upright, as trained (ms-swift
    itself would open the path without the EXIF turn)."""
    from swift import InferRequest  # heavy

    return InferRequest(messages=request.messages, images=[model_input(image) for image in request.images])




def predict(records: list, builder, engine, max_new_tokens: int, emit_norm: str | None = None, use_tqdm: bool = True,
            agree_on_calls: Callable[[int], int] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
            infer_kwargs: dict | None = None) -> list[PredictionLine]:
    """One prediction line per record: every question the builder asks about it (one for dense
    grounding, one per description for the grounding scheme), answers read back to pixels by the builder's answer
    codec (`builder.codec`; `emit_norm`, when given, must be its space). Greedy.
    Questions go to `engine.infer` `batch_size` at a time (the last call may hold fewer), their images loaded
    just before; the answers are those of asking one question at a time. `infer_kwargs` go to every
    `engine.infer` call (the evaluation during training names its adapter there).

    `agree_on_calls(n)` (processes generating together) returns how many questions every process asks; this
    one repeats its first question up to that number and drops the extra answers."""
    from swift import RequestConfig  # heavy

    from .fast_logprobs import install

    codec = builder.codec
    if emit_norm is not None and emit_norm != codec.emit_norm:
        raise ValueError(f"emit_norm {emit_norm!r} differs from the builder's answers ({codec.emit_norm!r})")
    install()  # the scores' log-probabilities without sorting the vocabulary per token (see that module)
    asked, requests = questions(records, builder)
    extra = agree_on_calls(len(requests)) - len(requests) if agree_on_calls else 0
    padded = requests + requests[:1] * extra
    config = RequestConfig(max_tokens=max_new_tokens, temperature=0.0, logprobs=True)
    responses = []
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(padded), batch_size):
        chunk = [as_seen(request) for request in padded[start:start + batch_size]]
        responses += engine.infer(chunk, config, use_tqdm=use_tqdm, **(infer_kwargs or {}))
    responses = responses[:len(requests)]
    lines = [PredictionLine(source=str(r.source), image=r.image, width=r.width,
                            height=r.height) for r in records]
    answers: list[list[str]] = [[] for _ in records]
    formats: list[set[str]] = [set() for _ in records]
    for (i, _), response in zip(asked, responses, strict=True):
        choice, record, line = response.choices[0], records[i], lines[i]
        text = choice.message.content or ""
        parsed, found = read_answer(text)
        scores = object_scores(text, *response_token_logprobs(choice.logprobs), len(found), parsed.spans)
        answers[i].append(text)
        formats[i].add(parsed.format)
        if parsed.error:
            line.parse_error = "; ".join(filter(None, [line.parse_error, parsed.error]))
        # Cut off: the list left open, or generation stopped by max_new_tokens (whatever it had written).
        line.truncated = line.truncated or parsed.truncated or choice.finish_reason == "length"
        line.bad_entries += parsed.bad_entries
        # One image per question: an entry's "image" index names nothing here.
        line.objects += codec.to_pixels([replace(o, score=round(s, 6), image=None)
                                         for o, s in zip(found, scores, strict=True)], record.width, record.height)
    for line, texts, seen in zip(lines, answers, formats, strict=True):
        line.raw = "\n".join(texts)
        line.answer_format = "/".join(sorted(seen)) if seen else None
    return lines
