"""The side folders of the data commands (`render`'s and `rows`' `<out stem>_images/`) against their inputs:
a folder a command writes images into must not hold an image the command reads."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from src.config.errors import UsageError

from .contract import Record


def image_inside(records: Iterable[Record], folder: Path) -> Record | None:
    """The first of `records` whose image lies inside `folder` (links followed), or None."""
    root = os.path.realpath(folder)
    for record in records:
        image = os.path.realpath(record.image)
        if image == root or image.startswith(root.rstrip(os.sep) + os.sep):
            return record
    return None


def refuse_images_inside(records: Iterable[Record], folder: Path, what: str) -> None:
    """Raise UsageError when an image of `records` (what the command reads) lies inside `folder`, the `what`
    it writes: writing there would replace or delete the image, whatever `--overwrite` says."""
    if not folder.is_dir():  # nothing there yet: no image of any record can lie inside
        return
    record = image_inside(records, folder)
    if record is not None:
        raise UsageError(f"{what} {folder} holds the image {record.image} of the input record {record.source}: "
                         f"writing there would replace or delete what this command reads (with --overwrite too); "
                         f"choose another --out")
