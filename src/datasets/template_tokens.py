"""Labels are text, never template tokens.

A `desc` or `summary` comes from crowd workers and OCR; a prompt from a config. Written into a conversation,
any of the strings below stops being text: the tokenizer matches an added token (`<|im_end|>`, `<|im_start|>`,
`<|vision_start|>`, `<think>`, ...) atomically wherever it appears, so `<|im_end|>\\n<|im_start|>system ...` in a
desc ends the answer and opens a turn the model is trained to obey; and ms-swift's template expands its
placeholders (`<image>`, `<video>`, ...) wherever they appear, so `<image>` in a desc adds an image the sample
does not have ("Image features and image tokens do not match" at the first step, naming no record).

So every such string is refused where the text enters: records by validation (file:line, the field, the token),
prompts by the config check (the key, the token). The token set is read from the model directory's tokenizer
files (JSON, no torch): every added token, special or not (a non-special added token is matched atomically
too). Without a model directory (`python -m src.datasets validate FILE`) it is Qwen's control tokens, the same
26 for Qwen2-VL, Qwen2.5-VL and Qwen3-VL. ms-swift's placeholders are always in the set.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract import Problem, Record

# ms-swift's `Template.special_tokens` (swift/template/base.py): expanded wherever they appear in a message.
SWIFT_PLACEHOLDERS = ("<image>", "<video>", "<audio>", "<bbox>", "<ref-object>", "<cot-process>", "<start-image>")
# Qwen's added tokens (ids 151643-151668), the set when no model directory is known.
QWEN_CONTROL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
)
_CONTEXT_CHARS = 24  # of the text around a token, shown in a problem


@dataclass(frozen=True, slots=True)
class TemplateTokens:
    """The strings a label or prompt must not hold, and where they were read from (for messages)."""

    tokens: tuple[str, ...]  # longest first: a match names the longest token at its place
    source: str

    def find(self, text: str) -> tuple[int, str] | None:
        """(character position, token) of the first token in `text`, or None."""
        match = _compiled(self.tokens).search(text.encode("utf-8"))
        if match is None:
            return None
        return len(match.string[:match.start()].decode("utf-8")), match.group().decode("utf-8")


@functools.lru_cache(maxsize=8)
def _compiled(tokens: tuple[str, ...]) -> re.Pattern[bytes]:
    return re.compile(b"|".join(re.escape(t.encode("utf-8")) for t in tokens))


def _make(tokens, source: str) -> TemplateTokens:
    unique = sorted({t for t in tokens if t}, key=lambda t: (-len(t), t))
    return TemplateTokens(tokens=tuple(unique), source=source)


def default_tokens() -> TemplateTokens:
    """Qwen's control tokens and ms-swift's placeholders: the set when no model directory is known."""
    return _make((*QWEN_CONTROL_TOKENS, *SWIFT_PLACEHOLDERS), "Qwen's control tokens; no model directory given")


def _added_tokens(model_dir: Path) -> set[str]:
    found: set[str] = set()
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        found |= {entry.get("content", "") for entry in (data.get("added_tokens_decoder") or {}).values()}
        for key in ("additional_special_tokens", "extra_special_tokens"):
            value = data.get(key) or []
            found |= {v if isinstance(v, str) else v.get("content", "") for v in
                      (value.values() if isinstance(value, dict) else value)}
    tokenizer = model_dir / "tokenizer.json"
    if tokenizer.is_file():
        import orjson  # the tokenizer of a real model is ~11 MB: orjson reads it in ~50 ms

        data = orjson.loads(tokenizer.read_bytes())
        found |= {entry.get("content", "") for entry in data.get("added_tokens") or []}
    return found


@functools.lru_cache(maxsize=8)
def _model_tokens(model_dir: str, stamp: tuple) -> TemplateTokens:
    found = _added_tokens(Path(model_dir))
    if not found:
        return _make((*QWEN_CONTROL_TOKENS, *SWIFT_PLACEHOLDERS),
                     f"Qwen's control tokens ({model_dir} names no added token)")
    return _make((*found, *SWIFT_PLACEHOLDERS), f"the tokenizer of {model_dir}")


def model_tokens(model_dir: str | os.PathLike[str] | None) -> TemplateTokens:
    """Every added token of the tokenizer in `model_dir` (tokenizer_config.json's `added_tokens_decoder` and
    special-token lists, tokenizer.json's `added_tokens`; read as JSON, no torch) and ms-swift's placeholders;
    `default_tokens()` without a directory. Unreadable tokenizer files raise ValueError naming the file."""
    if not model_dir or not Path(model_dir).is_dir():
        return default_tokens()
    folder = Path(model_dir).resolve()
    stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None
                  for f in (folder / "tokenizer_config.json", folder / "tokenizer.json"))
    try:
        return _model_tokens(str(folder), stamp)
    except (ValueError, OSError, AttributeError) as err:
        raise ValueError(f"{folder}: cannot read the tokenizer's added tokens ({err})") from None


def _context(text: str, start: int, token: str) -> str:
    return text[max(0, start - _CONTEXT_CHARS):start + len(token) + _CONTEXT_CHARS]


def _message(token: str, tokens: TemplateTokens) -> str:
    what = ("a placeholder ms-swift expands into an image, video or box" if token in SWIFT_PLACEHOLDERS
            else "a control token of the chat template")
    return (f"holds {token!r}, {what} ({tokens.source}): this text must stay text, but it would be read as the "
            f"token; remove it or write it differently (e.g. without its angle brackets)")


def text_problem(text: str, tokens: TemplateTokens) -> str | None:
    """What is wrong with a text (a prompt) that holds a token of `tokens`, or None: the token and the fix."""
    found = tokens.find(text)
    if found is None:
        return None
    start, token = found
    return f"{_message(token, tokens)}; near {_context(text, start, token)!r}"


def _blob_hits(data, offsets: np.ndarray, pattern: re.Pattern[bytes]) -> dict[int, tuple[int, str]]:
    """{entry index: (byte position in the entry, token)} of the first token inside each entry of a blob."""
    view = memoryview(np.ascontiguousarray(data, dtype=np.uint8))
    hits: dict[int, tuple[int, str]] = {}
    for match in pattern.finditer(view):
        entry = int(np.searchsorted(offsets, match.start(), side="right")) - 1
        # A match across two entries (the end of one, the start of the next) is neither's.
        if entry in hits or match.end() > offsets[entry + 1]:
            continue
        hits[entry] = (match.start() - int(offsets[entry]), match.group().decode("utf-8"))
    return hits


def _entry(data, offsets: np.ndarray, index: int) -> str:
    return bytes(data[int(offsets[index]):int(offsets[index + 1])]).decode("utf-8")


def _problem(file: str, line: int, field: str, text: str, byte_at: int, token: str,
             tokens: TemplateTokens) -> Problem:
    start = len(text.encode("utf-8")[:byte_at].decode("utf-8", errors="ignore"))
    return Problem(file=file, line=line, field=field, message=_message(token, tokens),
                   value=_context(text, start, token))


def record_token_problems(records: Sequence[Record], tokens: TemplateTokens,
                          file: str) -> tuple[list[Problem], np.ndarray]:
    """(a Problem per `desc` or `summary` holding a token of `tokens`, in record order; the indices of those
    records). A `RecordTable` is scanned in its columns: the distinct descs and the summaries, as bytes, no
    Record made."""
    pattern = _compiled(tokens.tokens)
    columns = getattr(records, "columns", None)
    if columns is None:
        return _record_problems_slow(records, tokens)
    lines = np.asarray(columns["lines"])
    obj_offsets = np.asarray(columns["obj_offsets"])
    problems: list[tuple[int, Problem]] = []
    desc_hits = _blob_hits(columns["descs"], np.asarray(columns["desc_offsets"]), pattern)
    if desc_hits:
        desc_ids = np.asarray(columns["desc_ids"])
        for obj in np.flatnonzero(np.isin(desc_ids, np.fromiter(desc_hits, dtype=np.int64))):
            record = int(np.searchsorted(obj_offsets, obj, side="right")) - 1
            desc = int(desc_ids[obj])
            text = _entry(columns["descs"], np.asarray(columns["desc_offsets"]), desc)
            problems.append((record, _problem(file, int(lines[record]), f"objects[{int(obj - obj_offsets[record])}]"
                                              f".desc", text, *desc_hits[desc], tokens)))
    summary_offsets = np.asarray(columns["summary_offsets"])
    for record, (at, token) in _blob_hits(columns["summaries"], summary_offsets, pattern).items():
        text = _entry(columns["summaries"], summary_offsets, record)
        problems.append((record, _problem(file, int(lines[record]), "summary", text, at, token, tokens)))
    problems.sort(key=lambda item: (item[0], item[1].field))
    bad = np.unique(np.fromiter((r for r, _ in problems), dtype=np.int64, count=len(problems)))
    return [p for _, p in problems], bad


def _record_problems_slow(records: Sequence[Record], tokens: TemplateTokens) -> tuple[list[Problem], np.ndarray]:
    problems, bad = [], []
    for index, record in enumerate(records):
        texts = [(f"objects[{k}].desc", o.desc) for k, o in enumerate(record.objects)]
        texts += [("summary", record.summary)] if record.summary else []
        found = False
        for field, text in texts:
            hit = tokens.find(text)
            if hit is not None:
                start, token = hit
                problems.append(Problem(file=record.source.file, line=record.source.line, field=field,
                                        message=_message(token, tokens), value=_context(text, start, token)))
                found = True
        if found:
            bad.append(index)
    return problems, np.array(bad, dtype=np.int64)
