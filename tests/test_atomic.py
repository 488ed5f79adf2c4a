"""An output written whole or not at all (src/config/atomic.py), through a link and onto a device too."""

from __future__ import annotations

import os

import pytest

from src.config.atomic import partial_path, write_text_then_rename, write_then_rename


def test_a_failed_write_leaves_the_earlier_file_and_no_partial(tmp_path):
    out = tmp_path / "metrics.json"
    out.write_text("earlier")
    with pytest.raises(RuntimeError), write_then_rename(out) as fh:
        fh.write("half")
        raise RuntimeError("stopped mid-way")
    assert out.read_text() == "earlier" and not partial_path(out).exists()
    assert write_text_then_rename(out, "new") == out and out.read_text() == "new"


def test_a_link_is_followed_and_stays_a_link(tmp_path):
    """os.replace onto the link's own path turned the link into a plain file and left its target stale."""
    target = tmp_path / "real" / "predictions.jsonl"
    target.parent.mkdir()
    target.write_text("earlier")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    write_text_then_rename(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_pipe_is_written_as_it_is(tmp_path):
    """`--out /dev/stdout` (a pipe or a device) was replaced by a regular file: the partial file renamed over
    it. A FIFO of the test's own stands for it (never a real device: a regression would replace it)."""
    import threading

    fifo = tmp_path / "out.pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_text_then_rename(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"] and fifo.is_fifo() and not partial_path(fifo).exists()
