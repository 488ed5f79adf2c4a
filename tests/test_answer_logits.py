"""Answer-only logits (src/training/answer_logits.py): the chunked head against plain cross-entropy, the
decisions, and a real ms-swift run whose loss and token accuracy equal ms-swift's own path."""

from __future__ import annotations

import json

import pytest
import torch

from src.training.answer_logits import (
    AnswerOnlyHead,
    choose_kernel,
    chunk_rows,
    first_max_is_target,
    labelled_rows,
    linear_cross_entropy,
    why_not,
)


def _reference(hidden, weight, bias, targets):
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), logits.argmax(-1) == targets


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_chunked_head_gives_the_loss_hits_and_gradients_of_full_logits(rows):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 8, generator=gen)
    weight, bias = torch.randn(50, 8, generator=gen), torch.randn(50, generator=gen)
    targets = torch.randint(0, 50, (10,), generator=gen)
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    loss, hits = linear_cross_entropy(*leaves, targets, rows)
    (loss * 0.5).backward()
    refs = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    ref_loss, ref_hits = _reference(*refs, targets)
    (ref_loss * 0.5).backward()
    assert torch.allclose(loss, ref_loss, rtol=1e-6) and torch.equal(hits, ref_hits)
    for mine, theirs in zip(leaves, refs, strict=True):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-6)


def test_hits_follow_argmax_on_tied_maxima_and_the_loss_stays_exact_for_far_targets():
    # Vocabulary rows 32-39 repeat rows 0-7, so each row's maximum is tied at i and 32 + i (exactly equal logits):
    # argmax, ms-swift's token accuracy, takes the first index.
    gen = torch.Generator().manual_seed(1)
    weight = torch.cat([torch.eye(8), 0.1 * torch.randn(24, 8, generator=gen), torch.eye(8)])
    hidden = 3 * torch.eye(8)[:6] + 0.1 * torch.randn(6, 8, generator=gen)
    logits = hidden @ weight.T
    first = logits.argmax(-1)
    assert first.tolist() == list(range(6)) and torch.equal(logits[:, :6].diagonal(), logits[:, 32:38].diagonal())
    for targets in (first, first + 32, torch.tensor([32, 1, 0, 39, 20, 2])):
        hits = first_max_is_target(logits, logits.amax(-1), logits.gather(1, targets[:, None])[:, 0], targets)
        assert torch.equal(hits, first == targets)
        loss, hits = linear_cross_entropy(hidden, weight, None, targets, 4)
        ref_loss, ref_hits = _reference(hidden, weight, None, targets)
        assert torch.equal(hits, ref_hits) and torch.allclose(loss, ref_loss, rtol=1e-6)
    # A target whose probability (e^-100, about 4e-44) is below fp32's normal range: still its exact loss.
    sharp = torch.zeros(2, 8)
    sharp[:, 0] = 100.0
    loss, hits = linear_cross_entropy(sharp, torch.eye(8), None, torch.tensor([1, 0]), 1)
    assert loss.item() == pytest.approx(100.0, rel=1e-6) and hits.tolist() == [False, True]


def test_labelled_rows_pick_positions_whose_next_token_is_labelled_per_row():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    rows, positions, targets = labelled_rows(labels)
    assert rows.tolist() == [0, 0, 1] and positions.tolist() == [1, 2, 0] and targets.tolist() == [5, 6, 7]


def test_the_step_accounting_counts_the_rows_the_armed_head_computed_and_a_batch_without_labels_trains():
    from src.training.step_accounting import StepAccounting

    head = torch.nn.Linear(8, 50)
    answer_only = AnswerOnlyHead(head, "torch")
    accounting = StepAccounting(say=lambda _: None)
    head.register_forward_hook(accounting._count_head_positions)
    accounting._step_start = 0.0  # within a step
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    with answer_only.armed(labels):
        head(hidden)
    assert accounting._head_positions == 3  # the labelled rows, not the 10 positions it was given
    head(hidden)  # unarmed (evaluation): the plain layer on every position
    assert accounting._head_positions == 13

    # No labelled token in a micro-batch: the loss is a zero whose graph still reaches the layer's weights,
    # so each gets a (zero) gradient (DDP waits for every parameter's).
    with answer_only.armed(torch.full((2, 5), -100)):
        loss = head(hidden)
    loss.backward()
    assert loss.item() == 0.0 and accounting._head_positions == 13
    assert torch.equal(head.weight.grad, torch.zeros_like(head.weight))
    assert torch.equal(head.bias.grad, torch.zeros_like(head.bias))


def test_decisions():
    ok = {"head": "Linear", "acc_strategy": "token"}
    assert why_not(ok) is None
    assert "loss_type" in why_not({**ok, "compute_loss_func": True})
    assert "sequence" in why_not({**ok, "sequence_parallel_size": 2})
    assert "not a plain Linear" in why_not({**ok, "head": "ModulesToSaveWrapper"})
    assert "seq" in why_not({**ok, "acc_strategy": "seq"})
    assert choose_kernel(True, True, "cuda") == "liger"
    assert choose_kernel(True, True, "cpu") == "torch" and choose_kernel(True, False, "cuda") == "torch"
    assert choose_kernel(False, True, "cuda") == "torch"
    assert chunk_rows(151936) >= 1 and chunk_rows(10) > chunk_rows(151936)


def _log_rows(run):
    rows = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    return [(r["loss"], r["token_acc"]) for r in rows if "loss" in r and "token_acc" in r]


@pytest.mark.slow
def test_same_loss_and_token_accuracy_as_ms_swift_with_padding_and_two_images_per_turn(mp_workspace, tmp_path,
                                                                                         capsys):
    from src.sft import main
    from tests.support.multiprocess import write_run_config

    runs = {}
    for on in (False, True):
        name = f"answer_only_{on}"
        config = write_run_config(tmp_path, name, workspace=mp_workspace,
                                  custom={"answer_only_logits": on, "images_per_user_turn": 2},
                                  training={"per_device_train_batch_size": 2, "max_steps": 3,
                                            "save_strategy": "no", "report_to": []})
        assert main(["--config", str(config)]) == 0
        runs[on] = _log_rows(tmp_path / name)
    out = capsys.readouterr().out
    assert "answer-only logits: on" in out
    assert len(runs[True]) == 3
    for (loss, acc), (ref_loss, ref_acc) in zip(runs[True], runs[False], strict=True):
        assert loss == pytest.approx(ref_loss, abs=1e-5) and acc == pytest.approx(ref_acc, abs=1e-5)


@pytest.mark.slow
def test_same_loss_on_two_cpu_processes_ddp_and_zero3(mp_workspace, tmp_path):
    # One reference run on ms-swift's path (DDP); answer-only logits under DDP and under ZeRO-3 (the head's
    # weight partitioned, gathered in its forward) must both log its losses: step 1 checks the forward,
    # step 2 that the first update was the same.
    from tests.support.multiprocess import free_port, losses_by_step, train_sh, write_run_config

    losses = {}
    for zero, on in ((None, False), (None, True), ("zero3", True)):
        name = f"{zero or 'ddp'}_answer_only_{on}"
        deepspeed = {"deepspeed": {"enabled": True, "config": zero}} if zero else {}
        config = write_run_config(tmp_path, name, workspace=mp_workspace, custom={"answer_only_logits": on},
                                  **deepspeed,
                                  training={"per_device_train_batch_size": 2, "max_steps": 2,
                                            "save_strategy": "no", "report_to": []})
        proc = train_sh([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert ("answer-only logits: on" in proc.stdout) == on
        losses[zero, on] = losses_by_step(tmp_path / name)
    reference = losses[None, False]
    assert len(reference) == 2
    for run in ((None, True), ("zero3", True)):
        assert losses[run].keys() == reference.keys(), run
        for step, loss in reference.items():
            assert losses[run][step] == pytest.approx(loss, abs=1e-5), (run, step)
