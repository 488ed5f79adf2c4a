"""A confidence per predicted object from the answer's token log-probabilities, so AP can rank.

An object's score is exp(mean log-probability of the tokens of its entry): the tokens that start inside the
entry's span as the parser read it (`src.datasets.answer.ParsedAnswer.spans`: from the entry's first character to
the next entry's, read or not, so a malformed entry or the cut-off tail of a truncated answer scores no object).
When the spans do not line up one-to-one with the objects asked about (the caller dropped some), every object
gets the whole answer's score instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from src.datasets.answer import parse_answer


def _mean_prob(logprobs: Sequence[float]) -> float:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


def object_scores(text: str, token_texts: Sequence[str], token_logprobs: Sequence[float],
                  n_objects: int, spans: Sequence[tuple[int, int]] | None = None) -> list[float]:
    """One score in [0, 1] per parsed object, in the parser's order (see module docstring). `spans`: the
    `ParsedAnswer.spans` of `text` when the caller has parsed it already (else it is parsed here)."""
    if n_objects == 0:
        return []
    if not token_logprobs or len(token_texts) != len(token_logprobs):
        return [1.0] * n_objects  # no log-probabilities: no ranking information
    offsets, position = [], 0
    for token in token_texts:
        offsets.append(position)
        position += len(token)
    if spans is None:
        spans = parse_answer(text).spans
    if len(spans) != n_objects:
        return [_mean_prob(token_logprobs)] * n_objects
    scores = []
    for start, end in spans:
        inside = [lp for off, lp in zip(offsets, token_logprobs, strict=True) if start <= off < end]
        scores.append(_mean_prob(inside))
    return scores


def response_token_logprobs(logprobs: object) -> tuple[list[str], list[float]]:
    """(token texts, log-probabilities) from an OpenAI-style `choices[0].logprobs` of ms-swift; empty if absent."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else getattr(logprobs, "content", None)
    if not content:
        return [], []
    texts, values = [], []
    for item in content:
        token = item.get("token") if isinstance(item, dict) else getattr(item, "token", None)
        value = item.get("logprob") if isinstance(item, dict) else getattr(item, "logprob", None)
        if token is None or value is None:
            return [], []
        texts.append(token)
        values.append(float(value))
    return texts, values
