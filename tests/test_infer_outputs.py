"""What `python -m src.infer` writes is whole or absent: predictions (and COCO results) go to a partial file in
the same folder renamed onto the target only once complete, so an interrupted write keeps the earlier file."""

from __future__ import annotations

import sys

import pytest

from src.evaluation.coco_files import write_coco_results
from src.inference.predictions import PredictionLine, read_prediction_rows, write_predictions


def _lines(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise RuntimeError("generation failed mid-way")
        yield PredictionLine(source=f"val.jsonl:{i + 1}", image=f"{i}.png", width=10, height=10, raw="x" * 2000)


def test_an_interrupted_prediction_write_keeps_the_earlier_file(tmp_path):
    """The predictions were written straight into `--out`: with --overwrite an exception mid-way left the earlier
    file replaced by the lines written so far, a shorter file that looks whole."""
    out = tmp_path / "pred.jsonl"
    write_predictions(_lines(3), out)
    earlier = out.read_bytes()
    with pytest.raises(RuntimeError, match="mid-way"):
        write_predictions(_lines(50, fail_at=40), out)  # 80 KB written before it fails: past any buffer
    assert out.read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.jsonl"]  # no partial file left behind
    write_predictions(_lines(5), out)
    rows, bad = read_prediction_rows(out)
    assert len(rows) == 5 and not bad


def test_coco_results_on_a_full_disk_keep_the_earlier_file(tmp_path):
    """`--coco_results` was written straight into place too: a full disk left a shorter, valid-looking list."""
    from tests.support.full_disk import can_fill_a_disk, run_on_full_disk

    if not can_fill_a_disk():
        pytest.skip("no private mount namespace here (unshare -rm): a full disk cannot be made honestly")
    folder = tmp_path / "out"
    out = folder / "results.json"
    write_coco_results([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}], out)
    earlier = out.read_bytes()
    write = ("import sys; from pathlib import Path; from src.evaluation.coco_files import write_coco_results; "
             "write_coco_results([{'image_id': i, 'category_id': 1, 'bbox': [0, 0, 1, 1], 'score': 0.5} "
             "for i in range(500)], Path(sys.argv[1]))")
    result, left = run_on_full_disk(folder, [sys.executable, "-c", write, str(out)])
    assert result.returncode != 0 and "No space left on device" in result.stderr
    assert sorted(p.name for p in left.iterdir()) == ["results.json"]  # no partial file left behind
    assert (left / "results.json").read_bytes() == earlier
