"""The pipeline's own additions to ms-swift's encoding: an encoding failure names the record it came from."""

from __future__ import annotations

import pytest

from src.datasets.builders import ROW_SOURCE_KEY


def test_an_encoding_failure_names_the_record_and_its_image():
    from src.training.pipeline import naming_the_record

    def encode(row, return_length=False):
        raise OSError("image file is truncated")

    row = {ROW_SOURCE_KEY: "data/train.jsonl:3", "images": ["/data/images/3.png"], "messages": []}
    with pytest.raises(OSError, match="truncated") as err:
        naming_the_record(encode)(row, return_length=True)
    assert err.value.__notes__ == ["while encoding the sample built from data/train.jsonl:3 "
                                   "(images: /data/images/3.png)"]
    assert naming_the_record(lambda r, **kw: {"ok": kw})(row, return_length=True) == {"ok": {"return_length": True}}
