"""A confidence per predicted object from the answer's token log-probabilities, so AP can rank.

An object's score is exp(mean log-probability of the tokens of its JSON entry). Entries are found by
the answer format (`src.datasets.answer.entry_starts`): entry k runs from its key to the next entry's.
When the entries found do not line up one-to-one with the parsed objects (an entry was malformed and
skipped by the parser), every object gets the whole answer's score instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from src.datasets.answer import entry_starts


def _mean_prob(logprobs: Sequence[float]) -> float:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


def object_scores(text: str, token_texts: Sequence[str], token_logprobs: Sequence[float],
                  n_objects: int) -> list[float]:
    """One score in [0, 1] per parsed object, in the parser's order (see module docstring)."""
    if n_objects == 0:
        return []
    if not token_logprobs or len(token_texts) != len(token_logprobs):
        return [1.0] * n_objects  # no log-probabilities: no ranking information
    offsets, position = [], 0
    for token in token_texts:
        offsets.append(position)
        position += len(token)
    starts = entry_starts(text)
    if len(starts) != n_objects:
        return [_mean_prob(token_logprobs)] * n_objects
    bounds = [*starts[1:], len(text) + 1]
    scores = []
    for start, end in zip(starts, bounds, strict=True):
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
