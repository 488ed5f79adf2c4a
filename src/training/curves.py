"""Loss curves from ms-swift's ``logging.jsonl`` (one JSON dict per line in the run dir).

Training lines carry ``loss`` and ``global_step/max_steps`` (e.g. ``"5/10"``); evaluation lines
carry ``eval_loss``. Rendering uses matplotlib's Agg canvas: no display needed.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_loss_curves", "read_loss_rows"]


def _step(row: dict) -> int | None:
    value = row.get("global_step/max_steps")
    if isinstance(value, str) and "/" in value:
        try:
            return int(value.split("/", 1)[0])
        except ValueError:
            return None
    for key in ("global_step", "step"):
        if isinstance(row.get(key), int) and not isinstance(row.get(key), bool):
            return row[key]
    return None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def read_loss_rows(logging_jsonl: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``(train, eval)`` lists of ``(step, loss)`` from a logging.jsonl, sorted by step.

    Lines that are not JSON objects, or lack a step or a numeric loss, are skipped. When a step
    was logged twice (a resumed run re-logs it) the later line wins.
    """
    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    with Path(logging_jsonl).open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a crash mid-write
            if not isinstance(row, dict) or (step := _step(row)) is None:
                continue
            if _number(row.get("loss")):
                train[step] = float(row["loss"])
            if _number(row.get("eval_loss")):
                evals[step] = float(row["eval_loss"])
    return sorted(train.items()), sorted(evals.items())


def plot_loss_curves(logging_jsonl: Path, out_png: Path) -> Path | None:
    """Plot train and eval loss against global step into ``out_png``; return it.

    Returns None (and writes nothing) when the file holds no loss rows at all.
    """
    train, evals = read_loss_rows(logging_jsonl)
    if not train and not evals:
        return None
    # A bare Figure renders through Agg without pyplot: no display, no global backend switch,
    # nothing left open between calls.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval loss", color="tab:orange", marker="o", linewidth=1.5)
    ax.set_xlabel("global step")
    ax.set_ylabel("loss")
    ax.set_title(Path(logging_jsonl).parent.name or "loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
