"""The tiny model's tokenizer: Qwen's own vocabulary, offline.

Qwen's 151,643 byte-level BPE ranks ship in the `dashscope` package (Apache-2.0, on the package index)
as `dashscope/resources/qwen.tiktoken`. They are turned into a Qwen2 fast tokenizer here, as transformers
converts any tiktoken vocabulary (`TikTokenConverter`): each token's bytes in GPT-2's byte-to-unicode
alphabet, and for each token every split into two tokens as a merge ranked by the token, so byte-pair
merging picks what tiktoken picks. Added to it: Qwen2's pre-tokenizer (digits split one by one), the 26
Qwen special/added tokens at their real ids (ms-swift's Qwen3-VL template hard-codes 151655/151656), eos
``<|im_end|>``, pad ``<|endoftext|>``, no bos, and the Qwen3-VL-Instruct chat template. So token counts,
lengths over `max_length` and the token sequences of coordinates and labels are those a real Qwen3-VL
sees.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path

from src.config.offline import apply_offline_env

apply_offline_env()  # before the first transformers import in the process

from tokenizers import AddedToken
from transformers import Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

QWEN_TIKTOKEN_PACKAGE = "dashscope==1.27.8"  # the last release line shipping resources/qwen.tiktoken


class VocabularyMissing(RuntimeError):
    """Qwen's vocabulary file is not installed here."""


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

# Verbatim chat template of Qwen3-VL-*-Instruct: no default system prompt, images as
# <|vision_start|><|image_pad|><|vision_end|>, Hermes-style tool calls, generation prompt.
QWEN3_VL_CHAT_TEMPLATE = (Path(__file__).with_name("chat_template.jinja")).read_text(encoding="utf-8")

def qwen_tiktoken_path() -> Path:
    """Where `qwen.tiktoken` is installed; raises VocabularyMissing naming the package to install."""
    from importlib import resources
    from importlib.util import find_spec

    missing = VocabularyMissing(f"the tiny model's tokenizer is Qwen's own vocabulary, read from the dashscope "
                                f"package's resources/qwen.tiktoken: pip install '{QWEN_TIKTOKEN_PACKAGE}' (in the "
                                f"project's dev extra; later dashscope releases no longer ship the file)")
    if find_spec("dashscope") is None:
        raise missing
    path = Path(str(resources.files("dashscope") / "resources" / "qwen.tiktoken"))
    if not path.is_file():
        raise missing
    return path


def read_tiktoken(path: Path) -> dict[bytes, int]:
    """The ranks of a `.tiktoken` file: one `base64(token bytes) rank` per line."""
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merges that encode as tiktoken does with `ranks` (pure; the way
    transformers' `TikTokenConverter` does it): every split of a token into two tokens is a merge, ranked by
    the token it makes."""
    alphabet = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        merges += [(left, right, rank) for left, right in splits]
    merges.sort(key=lambda merge: merge[2])
    return {text(token): rank for token, rank in ranks.items()}, [(text(a), text(b)) for a, b, _ in merges]


@functools.lru_cache(maxsize=1)
def _qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    return vocab_and_merges(read_tiktoken(qwen_tiktoken_path()))  # about 2 s: once per process


QWEN3_5_ADDED_SHIFT = 248044 - FIRST_ADDED_ID  # Qwen3.5 puts the same added tokens at 248044.. (+96,401)


def build_tokenizer(added_shift: int = 0) -> Qwen2Tokenizer:
    """Qwen's tokenizer, built from `qwen.tiktoken` (in memory; call ``save_pretrained`` to persist).

    ``added_shift`` moves the added tokens: 0 for Qwen3-VL (151643..), ``QWEN3_5_ADDED_SHIFT`` for Qwen3.5
    (248044..; ms-swift's Qwen3.5 template hard-codes image 248056 / video 248057). Qwen3.5's own 248k BPE is
    not available offline, so its tiny model keeps Qwen's 151,643 ranks and leaves the ids between unused.

    Promises: Qwen's byte-level BPE and Qwen2's pre-tokenizer, so text gets the ids the real Qwen3-VL
    tokenizer gives; ``convert_tokens_to_ids`` gives every token of ``QWEN_ADDED_TOKENS`` its real Qwen
    id, also after a save/reload round trip; eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos/unk; the
    Qwen3-VL-Instruct chat template; ``decode(encode(text)) == text``. Same output on every call. Raises
    VocabularyMissing when the vocabulary file is not installed.
    """
    vocab, merges = _qwen_vocab_and_merges()
    vocab = dict(vocab)
    if sorted(vocab.values()) != list(range(FIRST_ADDED_ID)):
        raise RuntimeError(f"Qwen's vocabulary should hold ranks 0..{FIRST_ADDED_ID - 1}, got {len(vocab)} entries")
    # The added tokens also go into the base vocabulary, so their ids do not depend on the order in
    # which transformers re-adds them at load time.
    added = [(token_id + added_shift, content, special) for token_id, content, special in QWEN_ADDED_TOKENS]
    for token_id, content, _special in added:
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
            for _, c, s in added
            if s
        ],
        special_tokens=True,
    )
    tokenizer.add_tokens(
        [
            AddedToken(c, special=s, normalized=False)
            for _, c, s in added
            if not s
        ]
    )
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    ids = {c: tokenizer.convert_tokens_to_ids(c) for _, c, _ in added}
    wrong = {c: ids[c] for i, c, _ in added if ids[c] != i}
    if wrong:
        raise RuntimeError(f"special tokens landed at wrong ids: {wrong}")
    return tokenizer
