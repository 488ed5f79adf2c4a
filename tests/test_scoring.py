"""Per-object confidences from token log-probabilities (src.inference.scoring): pure, no model."""

import math

import pytest

from src.datasets.answer import parse_answer
from src.inference.scoring import object_scores

# Token pieces as a tokenizer splits them: an entry's tokens start at its geometry key.
CAT = '"bbox_2d": [1, 2, 3, 4], "label": "cat"}'
DOG = '"bbox_2d": [5, 6, 7, 8], "label": "dog"}'


def tokens_of(pieces: list[tuple[str, float]]) -> tuple[str, list[str], list[float]]:
    return "".join(t for t, _ in pieces), [t for t, _ in pieces], [lp for _, lp in pieces]


def test_each_object_is_scored_by_the_tokens_of_its_own_entry():
    text, tokens, logprobs = tokens_of([("[{", 0.0), (CAT, math.log(0.9)), (", {", math.log(0.5)),
                                        (DOG, math.log(0.2)), ("]", 0.0)])
    n = len(parse_answer(text).objects)
    cat, dog = object_scores(text, tokens, logprobs, n)
    assert cat == pytest.approx(math.sqrt(0.9 * 0.5))  # the separator belongs to the entry before the next key
    assert dog == pytest.approx(math.sqrt(0.2))


def test_a_reasoning_block_that_mentions_a_key_does_not_shift_the_scores():
    """Qwen3.5's template writes `<think>...</think>` first; a key inside it is not an entry."""
    thought = '<think>\nmaybe "bbox_2d": [0, 0, 9, 9]?\n</think>\n\n'
    text, tokens, logprobs = tokens_of([(thought, math.log(0.01)), ("[{", 0.0), (CAT, math.log(0.9)), (", {", 0.0),
                                        (DOG, math.log(0.4)), ("]", 0.0)])
    n = len(parse_answer(text).objects)
    assert n == 2
    assert object_scores(text, tokens, logprobs, n) == pytest.approx([0.9 ** 0.5, 0.4 ** 0.5])


def test_without_log_probabilities_or_alignment_the_scores_say_so():
    text = f"[{{{CAT}, {{{DOG}]"
    assert object_scores(text, [], [], 2) == [1.0, 1.0]
    # entries found (2) differ from objects parsed (3): every object gets the whole answer's score
    assert object_scores(text, [text], [math.log(0.25)], 3) == pytest.approx([0.25] * 3)
