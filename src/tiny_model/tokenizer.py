"""Offline stand-in for the Qwen3-VL tokenizer and chat template.

No installed package ships Qwen's 151k-token vocabulary, so the tiny test model gets a
byte-level BPE trained in a few milliseconds on a built-in corpus. What downstream code relies
on is kept identical to the real tokenizer: Qwen2's pre-tokenizer (digits split one by one),
the 26 Qwen special/added tokens at their real ids (ms-swift's Qwen3-VL template hard-codes
151655/151656), eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos, and the Qwen3-VL-Instruct
chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

from src.config.offline import apply_offline_env

apply_offline_env()  # before the first transformers import in the process

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    normalizers,
    pre_tokenizers,
    trainers,
)
from tokenizers.models import BPE
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

# (id, content, special) exactly as in Qwen3-VL's tokenizer; the `special` flag decides
# whether `decode(skip_special_tokens=True)` drops the token.
QWEN_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
)
FIRST_ADDED_ID = QWEN_ADDED_TOKENS[0][0]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 262144  # Qwen3-VL's published value
BPE_VOCAB_SIZE = 1200

# Verbatim chat template of Qwen3-VL-*-Instruct: no default system prompt, images as
# <|vision_start|><|image_pad|><|vision_end|>, Hermes-style tool calls, generation prompt.
QWEN3_VL_CHAT_TEMPLATE = (Path(__file__).with_name("chat_template.jinja")).read_text(encoding="utf-8")

_COLOURS = (
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "pink",
    "black",
    "white",
    "gray",
    "grey",
    "brown",
    "cyan",
    "magenta",
    "gold",
    "silver",
)
_SHAPES = (
    "circle",
    "square",
    "triangle",
    "rectangle",
    "star",
    "hexagon",
    "pentagon",
    "ellipse",
    "oval",
    "diamond",
    "cross",
    "line",
    "arrow",
    "heart",
    "ring",
    "dot",
    "polygon",
    "trapezoid",
)
_SENTENCES = (
    "You are a helpful assistant.",
    "Find all objects in the image and output their bounding boxes as JSON.",
    "Locate every shape in the picture. Report bbox_2d and label for each one.",
    "Detect the red circle and the blue square. Return an empty list if there is nothing.",
    "Describe this image. What is in the picture? How many shapes are there?",
    "The quick brown fox jumps over the lazy dog near the small green house.",
    "There is a large yellow star on the left and a small purple triangle on the right.",
    "Output the coordinates of the top left and bottom right corners, from 0 to 1000.",
    "Please answer with a single word: yes or no. The answer is no, it is not there.",
    "This is a test of the tokenizer with some English words, numbers 0 1 2 3 4 5 6 7 8 9 and punctuation!",
    "System user assistant tool function name arguments call response think",
    "above below inside outside next to behind in front of between near far top bottom left right center",
)


def training_corpus() -> list[str]:
    """Return the fixed training corpus; identical on every call so the BPE is reproducible."""
    lines = list(_SENTENCES)
    for i, colour in enumerate(_COLOURS):
        for j, shape in enumerate(_SHAPES):
            x1, y1 = (i * 61 + j * 17) % 900, (i * 29 + j * 43) % 900
            x2, y2 = x1 + 10 + (i * 7 + j) % 90, y1 + 10 + (j * 11 + i) % 90
            box = {"bbox_2d": [x1, y1, x2, y2], "label": f"{colour} {shape}"}
            lines.append(json.dumps([box]))
            lines.append(f"a {colour} {shape} at ({x1},{y1}),({x2},{y2})")
    lines.append('[{"bbox_2d": [12, 34, 56, 78], "label": "red circle"}]')
    lines.append("[]")
    return lines


def _train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    # Same normalizer / pre-tokenizer as Qwen2Tokenizer rebuilds on load, so the merges learnt
    # here are the merges it will apply.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" "))
        for m in model["merges"]
    ]
    return dict(model["vocab"]), merges


def build_tokenizer() -> Qwen2Tokenizer:
    """Train and return the tiny Qwen2Tokenizer (in memory; call ``save_pretrained`` to persist).

    Promises: byte-level BPE with Qwen2's pre-tokenizer; ``convert_tokens_to_ids`` gives every
    token of ``QWEN_ADDED_TOKENS`` its real Qwen id, also after a save/reload round trip;
    eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos/unk; the Qwen3-VL-Instruct chat template;
    ``decode(encode(text)) == text`` for ordinary text and JSON. Same output on every call.
    """
    vocab, merges = _train_bpe()
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("trained BPE vocabulary is not contiguous")
    # Unused filler entries close the gap up to the real special-token ids; merges never
    # produce them. The added tokens themselves also go into the base vocabulary, so their ids
    # do not depend on the order in which transformers re-adds them at load time.
    for i in range(len(vocab), FIRST_ADDED_ID):
        vocab[f"<|unused_{i}|>"] = i
    for token_id, content, _special in QWEN_ADDED_TOKENS:
        vocab[content] = token_id

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        errors="replace",
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.add_tokens(
        [
            AddedToken(c, special=s, normalized=False)
            for _, c, s in QWEN_ADDED_TOKENS
            if s
        ],
        special_tokens=True,
    )
    tokenizer.add_tokens(
        [
            AddedToken(c, special=s, normalized=False)
            for _, c, s in QWEN_ADDED_TOKENS
            if not s
        ]
    )
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    ids = {c: tokenizer.convert_tokens_to_ids(c) for _, c, _ in QWEN_ADDED_TOKENS}
    wrong = {c: ids[c] for i, c, _ in QWEN_ADDED_TOKENS if ids[c] != i}
    if wrong:
        raise RuntimeError(f"special tokens landed at wrong ids: {wrong}")
    return tokenizer
