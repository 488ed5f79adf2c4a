"""Step accounting (src/training/step_accounting.py): the figures of hand-made batches and windows, the GPU peak
table, and two real runs of the ms-swift trainer on the tiny model (CPU): the token counts logged equal those
of the batches fed (counted again from the encoded samples), and a dataset slowed on purpose shows in
`data_wait_share`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_peak_table_matches_the_device_names_torch_reports():
    from src.training.step_accounting import peak_bf16_flops

    expected = {"NVIDIA H200": 989e12, "NVIDIA H200 NVL": 835e12, "NVIDIA H100 80GB HBM3": 989e12,
                "NVIDIA H100 PCIe": 756e12, "NVIDIA H100 NVL": 835e12, "NVIDIA A100-SXM4-80GB": 312e12,
                "NVIDIA A100 80GB PCIe": 312e12, "NVIDIA B200": 2250e12,
                "NVIDIA GH200 480GB": None, "NVIDIA GB200": None, "NVIDIA L4": None, "Tesla V100-SXM2-16GB": None}
    for name, peak in expected.items():
        found = peak_bf16_flops(name)
        assert (found and found[0]) == peak, name
        assert found is None or "datasheet" in found[1]


def test_batch_counts_padding_labels_images():
    import torch

    from src.training.step_accounting import count_batch

    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
             "labels": torch.tensor([[-100, -100, 4, 5, 6], [-100, 7, 8, -100, -100]]),
             "image_grid_thw": torch.tensor([[1, 4, 4], [1, 2, 6]])}
    counts = count_batch(batch)
    assert (counts.positions, counts.real, counts.loss) == (10, 8, 5)
    assert counts.seq_lens == (5, 3) and counts.image_patches == (16, 12) and counts.tokens
    # A packed (padding-free) row: the text positions (row 0 of Qwen3-VL's position ids) restart at each sample.
    packed = {"input_ids": torch.ones(1, 7, dtype=torch.long),
              "position_ids": torch.tensor([[[0, 1, 2, 3, 0, 1, 2]]] * 4)}
    counts = count_batch(packed)
    assert counts.seq_lens == (4, 3) and (counts.positions, counts.real, counts.loss) == (7, 7, 0)
    # GRPO feeds prompts (a list of rows): no token figures from them.
    assert not count_batch([{"messages": []}]).tokens


def test_window_figures():
    from src.training.step_accounting import BatchCounts, Window, window_figures

    window = Window()
    window.add_batch(BatchCounts(positions=10, real=8, loss=5))
    window.add_batch(BatchCounts(positions=6, real=6, loss=1))
    window.add_step(2.0, 0.5, flops=3e12)
    window.add_step(2.0, 0.3, flops=1e12)
    figures = window_figures(window, 1.5, peak_flops=1e12)
    assert figures == {"step_time_s": 2.0, "data_wait_share": 0.2, "tokens_per_s": 3.5, "real_tokens": 14,
                       "loss_tokens": 6, "padding_share": 0.125, "loss_token_share": round(6 / 14, 4),
                       "peak_memory_gib": 1.5, "mfu": 1.0}
    assert "mfu" not in window_figures(window, 1.5, peak_flops=None)
    assert window_figures(Window(), 1.0, None) == {}
    tokenless = Window()
    tokenless.add_batch(BatchCounts(tokens=False))
    tokenless.add_step(1.0, 0.1)
    assert set(window_figures(tokenless, 1.0, 1e12)) == {"step_time_s", "data_wait_share", "peak_memory_gib"}


# ---- real runs (ms-swift on the tiny model, CPU) ----

SLEEP_S = 0.8  # per sample, in the slowed run
BATCH = 2


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from src.config.offline import apply_offline_env
    from src.datasets.synth import write_synthetic_dataset
    from src.tiny_model import build_tiny_model

    apply_offline_env()
    root = tmp_path_factory.mktemp("step_accounting")
    build_tiny_model(root / "model")
    write_synthetic_dataset(root / "data", n=6)
    return root


def _train(root: Path, name: str, report_to: str = "[]"):
    """Stage 2 on CPU, batches of 2, one log line per step, in process; returns the GroundingSft and its run."""
    import os

    from swift import SftArguments

    from src.config import load_project_config, to_sft_kwargs
    from src.datasets.plan import plan_data
    from src.training.pipeline import GroundingSft

    config = root / f"{name}.yaml"
    config.write_text(
        f"extends: [{REPO / 'configs' / 'stage_2_llm_lora.yaml'}, {REPO / 'configs' / 'cpu.yaml'}]\n"
        "model:\n  model: ./model\ncustom:\n  train_jsonl: data/train.jsonl\n  health_check_samples: 0\n"
        f"training:\n  output_dir: ./{name}\n  max_steps: 3\n  logging_steps: 1\n  eval_strategy: 'no'\n"
        f"  save_strategy: 'no'\n  per_device_train_batch_size: {BATCH}\n  report_to: {report_to}\n")
    cfg = load_project_config(config)
    # ms-swift only setdefaults TENSORBOARD_LOGGING_DIR: an earlier in-process run of this pytest session (as
    # src.training.setup.prepare_run sets it) would take these curves to its own directory.
    os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
    sft = GroundingSft(SftArguments(**to_sft_kwargs(cfg)), cfg, plan_data(cfg), [])
    sft.main()
    return sft, root / name


def _rows(run: Path) -> list[dict]:
    lines = (run / "logging.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row]


@pytest.mark.slow
def test_logged_tokens_are_those_of_the_batches_and_a_slow_dataset_shows(workspace, monkeypatch, capfd):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from src.datasets.rows import SAMPLE_LOG_ENV, GroundingRowsDataset

    monkeypatch.setenv(SAMPLE_LOG_ENV, str(workspace / "samples"))
    sft, run = _train(workspace, "plain", report_to="[tensorboard]")
    rows = _rows(run)
    assert len(rows) == 3
    for row in rows:
        assert {"step_time_s", "data_wait_share", "tokens_per_s", "padding_share", "loss_token_share",
                "peak_memory_gib"} <= set(row) and "mfu" not in row  # no MFU on CPU
        assert 0 <= row["data_wait_share"] < 1 and row["peak_memory_gib"] > 0.1
    assert rows[0]["flops_per_token"] > 0 and all("flops_per_token" not in row for row in rows[1:])
    console = capfd.readouterr()
    assert "step accounting: flops_per_token=" in console.out and "no mfu on cpu" in console.out
    assert "'data_wait_share':" in console.out + console.err  # the console line

    # The batches again, from the samples the run logged it fed (in order) and the run's own template.
    # Batches of BATCH in the order fed, a short one at the end of an epoch (5 samples: 2 + 2 + 1).
    fed = [json.loads(line) for line in (workspace / "samples" / "samples-rank0.jsonl").read_text().splitlines()]
    dataset = GroundingRowsDataset(sft._plan.train_samples, sft._plan.builder)
    batches = []
    for epoch in sorted({line["epoch"] for line in fed}):
        indices = [line["index"] for line in fed if line["epoch"] == epoch]
        batches += [indices[i:i + BATCH] for i in range(0, len(indices), BATCH)]
    assert len(batches) == len(rows) and len(fed) > len(rows)
    for step, row in enumerate(rows):
        batch = [sft.template.encode(dataset.row(index)) for index in batches[step]]
        lengths = [len(sample["input_ids"]) for sample in batch]
        loss = sum(sum(1 for label in sample["labels"] if label != -100) for sample in batch)
        assert (row["real_tokens"], row["loss_tokens"]) == (sum(lengths), loss), step
        assert row["padding_share"] == round(1 - sum(lengths) / (len(batch) * max(lengths)), 4)
        assert row["loss_token_share"] == round(loss / sum(lengths), 4)
        assert row["tokens_per_s"] == pytest.approx(sum(lengths) / row["step_time_s"], rel=2e-3)

    board = EventAccumulator(json.loads((run / "args.json").read_text())["logging_dir"])
    board.Reload()
    assert [event.step for event in board.Scalars("train/data_wait_share")] == [1, 2, 3]
    assert [event.value for event in board.Scalars("train/real_tokens")] == [row["real_tokens"] for row in rows]

    monkeypatch.delenv(SAMPLE_LOG_ENV)
    getitem = GroundingRowsDataset.__getitem__

    def slow_getitem(self, position):
        time.sleep(SLEEP_S)
        return getitem(self, position)

    monkeypatch.setattr(GroundingRowsDataset, "__getitem__", slow_getitem)
    _, slowed = _train(workspace, "slowed")

    def waits(rows):
        return [row["step_time_s"] * row["data_wait_share"] for row in rows]

    slow_rows = _rows(slowed)
    assert [r["real_tokens"] for r in slow_rows] == [r["real_tokens"] for r in rows]  # same data, same batches
    # Each step waited for its slowed samples, and that wait is what the share grew by.
    for batch, slow, plain in zip(batches, waits(slow_rows), waits(rows), strict=True):
        assert slow >= len(batch) * SLEEP_S * 0.99 and slow - plain >= len(batch) * SLEEP_S * 0.9, (slow, plain)
    assert sum(r["data_wait_share"] for r in slow_rows) > 3 * sum(r["data_wait_share"] for r in rows)
