"""The answer log-probabilities (src/inference/fast_logprobs.py) equal ms-swift's own, computed faster and
without keeping every step's logits."""

import pytest
import torch
from swift.infer_engine.transformers_engine import TransformersEngine

from src.inference import fast_logprobs
from src.inference.fast_logprobs import StepLogprobs, install, preprocess_logits

SWIFTS_OWN = TransformersEngine.__dict__["preprocess_logits"].__func__
SWIFTS_INFER_FULL = TransformersEngine.__dict__["_infer_full"]


def _logits(batch: int, steps: int, vocab: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = [torch.randn(batch, vocab, generator=generator) * 4 for _ in range(steps)]
    ids = torch.randint(0, vocab, (batch, steps), generator=generator)
    ids[0, 1] = int(logits[1][0].argmax())  # a generated token that is also the most likely one
    return logits, ids


def test_the_same_tokens_values_and_order_as_ms_swift():
    logits, ids = _logits(batch=3, steps=5, vocab=1000, seed=0)
    for top in (None, 1, 3):
        ours, theirs = preprocess_logits(logits, ids, top), SWIFTS_OWN(logits, ids, top)
        assert [[list(step) for step in answer] for answer in ours] == \
               [[list(step) for step in answer] for answer in theirs]  # the generated token first, then the top
        values = [v for answer in ours for step in answer for v in step.values()]
        expected = [v for answer in theirs for step in answer for v in step.values()]
        assert torch.allclose(torch.tensor(values), torch.tensor(expected), rtol=0, atol=1e-5)
    assert len(ours[0][1]) == 3  # the generated token was the most likely one: counted once
    assert preprocess_logits(None, ids, None) is None


@pytest.fixture
def swifts_engine_class():
    """ms-swift's TransformersEngine as it ships, given back so after the test."""
    original = TransformersEngine.__dict__["preprocess_logits"], TransformersEngine.__dict__["_infer_full"]
    TransformersEngine.preprocess_logits = staticmethod(SWIFTS_OWN)
    TransformersEngine._infer_full = SWIFTS_INFER_FULL
    yield TransformersEngine
    TransformersEngine.preprocess_logits, TransformersEngine._infer_full = original


def test_install_puts_it_in_place_of_ms_swifts_once(swifts_engine_class):
    install()
    install()
    assert swifts_engine_class.preprocess_logits is fast_logprobs._preprocess_logits
    assert swifts_engine_class._infer_full.keeps_no_logits
    assert swifts_engine_class._infer_full.__closure__[0].cell_contents is SWIFTS_INFER_FULL  # wrapped once


def _generate_steps(collector: StepLogprobs, logits: list[torch.Tensor], ids: torch.Tensor, idle_forwards: int = 0):
    """What generate does with the collector: per step the head's forward, then the processors (with the ids so
    far); then `idle_forwards` forwards of a process that finished first under synced_gpus."""
    prompt = torch.zeros(ids.shape[0], 3, dtype=torch.long)
    for step, step_logits in enumerate(logits):
        collector.observe(None, (), step_logits[:, None, :])
        collector(torch.cat([prompt, ids[:, :step]], 1), step_logits)
    for _ in range(idle_forwards):
        collector.observe(None, (), torch.randn(ids.shape[0], 1, logits[0].shape[1]))


def test_step_logprobs_report_what_kept_logits_give_holding_two_rows_at_most():
    logits, ids = _logits(batch=3, steps=40, vocab=1000, seed=1)
    for top, idle, expected in ((None, 0, None), (3, 5, 7)):  # 7: the tensors grow twice on the way to 40 steps
        collector = StepLogprobs(top, expected)
        _generate_steps(collector, logits, ids, idle_forwards=idle)
        ours, theirs = collector.answers(ids), SWIFTS_OWN(logits, ids, top)
        assert [[list(step) for step in answer] for answer in ours] == \
               [[list(step) for step in answer] for answer in theirs]
        assert [v for a in ours for s in a for v in s.values()] == \
               pytest.approx([v for a in theirs for s in a for v in s.values()], abs=1e-5)
        assert collector.most_full_rows == 2
    # A stop decided one step late (transformers' DeferredStopCheck on an Apple GPU): one more forward through
    # the processors, whose token generate drops; the answers are those of the steps it kept.
    collector = StepLogprobs(3)
    _generate_steps(collector, logits[:39], ids[:, :39])
    collector.observe(None, (), logits[39][:, None, :])
    collector(torch.cat([torch.zeros(ids.shape[0], 3, dtype=torch.long), ids[:, :39]], 1), logits[39])
    ours, theirs = collector.answers(ids[:, :39]), SWIFTS_OWN(logits[:39], ids[:, :39], 3)
    assert [[list(step) for step in answer] for answer in ours] == \
           [[list(step) for step in answer] for answer in theirs]
    assert [v for a in ours for s in a for v in s.values()] == \
           pytest.approx([v for a in theirs for s in a for v in s.values()], abs=1e-5)
    with pytest.raises(RuntimeError, match="40 generation steps for 38 generated tokens"):
        collector = StepLogprobs(None)
        _generate_steps(collector, logits, ids)
        collector.answers(ids[:, :38])


@pytest.mark.slow
def test_generation_on_the_tiny_model_gives_ms_swifts_answers_and_values(mp_workspace, swifts_engine_class,
                                                                         monkeypatch):
    from swift import InferRequest, RequestConfig

    from src.config.prompts import get_prompt_scheme

    monkeypatch.setenv("IMAGE_MAX_TOKEN_NUM", "64")  # configs/cpu.yaml's budget
    scheme = get_prompt_scheme("dense")
    images = sorted((mp_workspace / "data" / "images").iterdir())[:3]
    requests = [InferRequest(messages=[{"role": "system", "content": scheme.system},
                                       {"role": "user", "content": f"<image>{scheme.user}"}], images=[str(image)])
                for image in images]
    engine = swifts_engine_class(str(mp_workspace / "model"), model_type="qwen3_vl", attn_impl="sdpa",
                                max_batch_size=3)
    collectors = []
    monkeypatch.setattr(fast_logprobs, "StepLogprobs",
                        type("Recorded", (StepLogprobs,), {"__init__": lambda self, *args: (
                            StepLogprobs.__init__(self, *args), collectors.append(self))[0]}))

    def answers(top):
        config = RequestConfig(max_tokens=24, temperature=0.0, logprobs=True, top_logprobs=top)
        return [(r.choices[0].message.content, r.choices[0].logprobs["content"])
                for r in engine.infer(requests, config, use_tqdm=False)]

    theirs = {top: answers(top) for top in (None, 3)}
    assert not collectors
    install()
    ours = {top: answers(top) for top in (None, 3)}
    assert len(collectors) == 2 and all(c.most_full_rows == 2 for c in collectors)
    for top in theirs:
        for (text, mine), (expected_text, expected) in zip(ours[top], theirs[top], strict=True):
            assert text == expected_text and len(mine) == len(expected) == 24
            for step, want in zip(mine, expected, strict=True):
                assert step["token"] == want["token"] and step["logprob"] == pytest.approx(want["logprob"], abs=1e-5)
                tops, wanted = step.get("top_logprobs", []), want.get("top_logprobs", [])
                assert [t["logprob"] for t in tops] == pytest.approx([t["logprob"] for t in wanted], abs=1e-5)
                assert len(wanted) == (top or 0)
                # bf16 logits tie often; ms-swift's sort and topk may list tied tokens in another order
                last = wanted[-1]["logprob"] if wanted else None
                untied = [i for i, t in enumerate(wanted) if t["logprob"] != last and
                          sum(u["logprob"] == t["logprob"] for u in wanted) == 1]
                assert [tops[i]["token"] for i in untied] == [wanted[i]["token"] for i in untied]
