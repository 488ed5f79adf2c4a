"""Health checks of encoded samples: what ms-swift's template made of a row is what we meant.

Run in full on the first `custom.health_check_samples` samples of every training run (src/training/pipeline.py)
and on every sample that `python -m src.datasets render` writes; the cheap token invariants
(`token_invariant_problems`: image-pad tokens against the grid, no control token in the answer but its final
`<|im_end|>`) on every sample the dataloader encodes (`checking_every_sample`). Each check returns problems as
text; a failure names the row's records (file:line) and what differs. Pure functions over the encoded dict; no
model needed.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import numpy as np

from src.datasets.builders import ROW_SOURCE_KEY, AnswerCodec, read_answer, row_geometry
from src.datasets.objects import GeoObject

IMAGE_PAD_TOKEN = "<|image_pad|>"
IM_END_TOKEN = "<|im_end|>"
IGNORE_INDEX = -100


def _as_list(value: Any) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _assistant_text(row: dict[str, Any]) -> str:
    return "".join(m["content"] for m in row["messages"] if m["role"] == "assistant")


def placeholder_problems(row: dict[str, Any]) -> list[str]:
    """`<image>` placeholders in the user turns must equal the row's images."""
    placeholders = sum(m["content"].count("<image>") for m in row["messages"] if m["role"] == "user")
    if placeholders != len(row["images"]):
        return [f"{placeholders} <image> placeholder(s) in the user turn but {len(row['images'])} image(s)"]
    return []


def vision_token_problems(encoded: dict[str, Any], image_pad_id: int, merge_size: int) -> list[str]:
    """Image-pad tokens must equal sum(prod(grid_thw)) / merge_size**2, and pixel_values rows sum(prod(grid_thw))."""
    grid = np.asarray(_as_list(encoded.get("image_grid_thw", [])), dtype=np.int64).reshape(-1, 3)
    patches = int(grid.prod(axis=1).sum()) if len(grid) else 0
    pads = _as_list(encoded["input_ids"]).count(image_pad_id)
    problems = []
    if pads * merge_size**2 != patches:
        problems.append(f"{pads} image-pad tokens but image_grid_thw {grid.tolist()} gives {patches} patches "
                        f"(= {patches / merge_size**2:g} tokens at merge size {merge_size})")
    pixel_values = encoded.get("pixel_values")
    if pixel_values is not None and int(pixel_values.shape[0]) != patches:
        problems.append(f"pixel_values has {int(pixel_values.shape[0])} rows but image_grid_thw gives {patches}")
    return problems


def label_problems(encoded: dict[str, Any], tokenizer, row: dict[str, Any], image_pad_id: int) -> list[str]:
    """Labels train exactly the assistant answer followed by `<|im_end|>`; image tokens are masked."""
    input_ids, labels = _as_list(encoded["input_ids"]), _as_list(encoded["labels"])
    problems = []
    if len(input_ids) != len(labels):
        return [f"{len(input_ids)} input ids but {len(labels)} labels"]
    if any(lab != IGNORE_INDEX for tok, lab in zip(input_ids, labels, strict=True) if tok == image_pad_id):
        problems.append("image-pad tokens are trained (labels not -100)")
    trained = tokenizer.decode([lab for lab in labels if lab != IGNORE_INDEX], skip_special_tokens=False)
    expected = _assistant_text(row) + IM_END_TOKEN
    if trained.rstrip("\n") != expected:
        problems.append(f"trained tokens decode to {trained[:200]!r}, expected the answer {expected[:200]!r}")
    return problems


def _counted(objects: list[GeoObject] | tuple[GeoObject, ...]) -> Counter:
    # Compared as a multiset: the order of the entries is the builder's business, their content is checked.
    return Counter((o.image, o.kind, tuple(int(v) for v in o.points), o.desc) for o in objects)


def coordinate_problems(encoded: dict[str, Any], tokenizer, row: dict[str, Any], emit_norm: str) -> list[str]:
    """The objects decoded from the trained labels equal the row's pixel geometry in the answer's space
    `emit_norm`, both through the answer codec (src/datasets/builders/codec.py): the labels read back by
    `read_answer`, the geometry (`row_geometry`) taken to the grid by `AnswerCodec.answer_objects`."""
    labels = [lab for lab in _as_list(encoded["labels"]) if lab != IGNORE_INDEX]
    text = tokenizer.decode(labels, skip_special_tokens=True)
    parsed, found = read_answer(text)
    if parsed.error:
        return [f"the trained answer does not parse back ({parsed.error}): {text[:200]!r}"]
    decoded = _counted(found)
    expected = _counted(AnswerCodec(emit_norm).answer_objects(row_geometry(row)))
    if decoded != expected:
        missing, extra = expected - decoded, decoded - expected
        return [f"coordinates in the labels differ from the pixel geometry: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(extra)[:3]}"]
    return []


def check_sample(row: dict[str, Any], encoded: dict[str, Any], tokenizer, *, merge_size: int, emit_norm: str,
                 grounding: bool) -> list[str]:
    """Every check for one encoded row; `grounding=False` (summary scheme) skips the coordinate check."""
    image_pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN)
    problems = placeholder_problems(row) + vision_token_problems(encoded, image_pad_id, merge_size)
    problems += label_problems(encoded, tokenizer, row, image_pad_id)
    if grounding:
        problems += coordinate_problems(encoded, tokenizer, row, emit_norm)
    return problems


# Added tokens the chat template itself may put in an answer (a thinking template's empty <think></think>).
_TEMPLATE_OWN = frozenset({"<think>", "</think>"})


def token_invariant_problems(encoded: dict[str, Any], image_pad_id: int, merge_size: int, control_ids: frozenset[int],
                             im_end_id: int) -> list[str]:
    """The cheap invariants of one encoded sample: image-pad tokens match the image grid, and the trained span
    holds no control token but its final `<|im_end|>` (a label that became template tokens). Linear in the
    sample's tokens, no decoding: run on every sample the dataloader encodes."""
    problems = vision_token_problems(encoded, image_pad_id, merge_size)
    controls = [lab for lab in _as_list(encoded["labels"]) if lab != IGNORE_INDEX and lab in control_ids]
    if controls[-1:] == [im_end_id]:
        controls.pop()
    if controls:
        problems.append(f"the trained answer holds control token id(s) {controls[:5]} besides its final <|im_end|>: "
                        f"a label was read as template tokens")
    return problems


def checking_every_sample(encode, tokenizer, merge_size: int):
    """`encode` that checks `token_invariant_problems` on each sample it encodes and raises ValueError naming the
    row's records (file:line) when one fails: the check of the first `health_check_samples` samples, cheap
    enough for all of them (a list scan per sample: ~0.1 ms for 2,000 tokens, against milliseconds to encode)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    control_ids = frozenset(i for i, tok in added.items() if str(tok) not in _TEMPLATE_OWN)
    image_pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN)
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END_TOKEN)

    @functools.wraps(encode)
    def encode_and_check(row, *args, **kwargs):
        encoded = encode(row, *args, **kwargs)
        if isinstance(encoded, dict) and "input_ids" in encoded and "labels" in encoded:
            problems = token_invariant_problems(encoded, image_pad_id, merge_size, control_ids, im_end_id)
            if problems:
                raise ValueError(f"health check of the sample built from {row.get(ROW_SOURCE_KEY, '?')}: "
                                 + "; ".join(problems))
        return encoded

    return encode_and_check


def format_failures(failures: list[tuple[str, list[str]]]) -> str:
    """One block per failing row: its records' file:line, then each problem."""
    return "\n".join(f"{source}:\n" + "\n".join(f"  - {p}" for p in problems) for source, problems in failures)


def check_rows(rows, encode, tokenizer, *, merge_size: int, emit_norm: str, grounding: bool,
               limit: int) -> list[tuple[str, list[str]]]:
    """Encode the first `limit` rows with `encode` and return (source, problems) for each failing one."""
    failures = []
    for index in range(min(limit, len(rows))):
        row = rows[index]
        problems = check_sample(row, encode(row), tokenizer, merge_size=merge_size, emit_norm=emit_norm,
                                grounding=grounding)
        if problems:
            failures.append((row[ROW_SOURCE_KEY], problems))
    return failures
