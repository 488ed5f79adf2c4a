"""Choosing the ms-swift inference engine (vLLM cannot run here: the decision is what is tested)."""

from __future__ import annotations

import pytest

from src.inference.engine import choose_engine


@pytest.mark.parametrize(("requested", "vllm", "cuda", "expected"), [
    ("auto", True, True, "vllm"),
    ("auto", True, False, "transformers"),
    ("auto", False, True, "transformers"),
    ("transformers", True, True, "transformers"),
    ("vllm", True, True, "vllm"),
])
def test_engine_choice(requested, vllm, cuda, expected):
    assert choose_engine(requested, vllm, cuda) == expected


@pytest.mark.parametrize(("vllm", "cuda", "reason"), [(False, True, "vllm is not installed"), (True, False, "no GPU")])
def test_vllm_that_cannot_run_is_refused_with_the_reason(vllm, cuda, reason):
    with pytest.raises(ValueError, match=reason):
        choose_engine("vllm", vllm, cuda)
