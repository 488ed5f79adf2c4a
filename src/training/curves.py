"""Loss curves from ms-swift's ``logging.jsonl`` (one JSON dict per line in the run dir).

Training lines carry ``loss`` and ``global_step/max_steps`` (e.g. ``"5/10"``); evaluation lines
carry ``eval_loss``, and with the evaluation by generation ``eval_ap50`` and ``eval_parse_failure_rate``
(src/training/generation_eval.py), drawn in a second panel beside the loss. Rendering uses matplotlib's
Agg canvas: no display needed.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_loss_curves", "read_loss_rows", "read_metric_rows"]
GROUNDING_CURVES = (("eval_ap50", "AP50", "tab:green"), ("eval_parse_failure_rate", "parse failures", "tab:red"))


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


def read_metric_rows(logging_jsonl: Path, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """For each of `keys`, the ``(step, value)`` pairs of a logging.jsonl, sorted by step.

    Lines that are not JSON objects, or lack a step, are skipped, and so is a key whose value is not a
    number. When a step was logged twice (a resumed run re-logs it) the later line wins.
    """
    found: dict[str, dict[int, float]] = {key: {} for key in keys}
    with Path(logging_jsonl).open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a crash mid-write
            if not isinstance(row, dict) or (step := _step(row)) is None:
                continue
            for key in keys:
                if _number(row.get(key)):
                    found[key][step] = float(row[key])
    return {key: sorted(values.items()) for key, values in found.items()}


def read_loss_rows(logging_jsonl: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``(train, eval)`` lists of ``(step, loss)`` from a logging.jsonl, sorted by step (see
    `read_metric_rows`)."""
    rows = read_metric_rows(logging_jsonl, ("loss", "eval_loss"))
    return rows["loss"], rows["eval_loss"]


def plot_loss_curves(logging_jsonl: Path, out_png: Path) -> Path | None:
    """Plot train and eval loss against global step into ``out_png``, and beside them AP50 and the
    parse-failure rate when the run logged them; return it.

    Returns None (and writes nothing) when the file holds no loss rows at all.
    """
    train, evals = read_loss_rows(logging_jsonl)
    if not train and not evals:
        return None
    grounding = read_metric_rows(logging_jsonl, tuple(key for key, _, _ in GROUNDING_CURVES))
    # A bare Figure renders through Agg without pyplot: no display, no global backend switch,
    # nothing left open between calls.
    from matplotlib.figure import Figure

    with_grounding = any(grounding.values())
    fig = Figure(figsize=(12 if with_grounding else 7, 4), dpi=100)
    ax, *side = fig.subplots(1, 2) if with_grounding else [fig.subplots()]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval loss", color="tab:orange", marker="o", linewidth=1.5)
    ax.set_xlabel("global step")
    ax.set_ylabel("loss")
    ax.set_title(Path(logging_jsonl).parent.name or "loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if side:
        for key, label, colour in GROUNDING_CURVES:
            if grounding[key]:
                side[0].plot(*zip(*grounding[key], strict=True), label=label, color=colour, marker="o", linewidth=1.5)
        side[0].set_xlabel("global step")
        side[0].set_ylim(-0.02, 1.02)
        side[0].set_title("evaluation by generation")
        side[0].grid(True, alpha=0.3)
        side[0].legend()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
