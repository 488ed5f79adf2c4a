"""Records -> ms-swift's own row format, for ms-swift's CLI (`swift infer --val_dataset rows.jsonl`).

The rows ask what training asked (the config's builder and prompt: system turn, user turn with one
`<image>` per record) and, unless told not to, carry the reference answer as the assistant turn, which
`swift infer` prints as the labels beside its response. Image paths are absolute, so the file works from
any directory. ms-swift opens a path without applying its EXIF turn, so an image that is not plain RGB
(src/datasets/images.py `is_plain_rgb`) is written upright beside the rows and the row points there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .builders import BaseBuilder
from .contract import Record
from .images import model_input


def swift_rows(records: Sequence[Record], builder: BaseBuilder, *, with_answer: bool = True
               ) -> Iterator[dict[str, Any]]:
    """The row of every question the builder asks about each record: `messages` and `images` only (the
    project's bookkeeping keys left out), images as the records name them."""
    for record in records:
        for focus in builder.focuses([record]):
            row = builder.build([record], with_answer=with_answer, **focus)
            yield {"messages": row["messages"], "images": [str(image) for image in row["images"]]}


WRITTEN = ".rows_written"
"""The list, inside `upright_dir(out)`, of the copies `write_swift_rows` wrote there (one file name a line, each
listed before it is written): what rows written over remove, and nothing else of that folder."""


def upright_dir(out: Path) -> Path:
    """The folder beside the rows `out` that holds upright copies of its turned images: `<out stem>_images/`."""
    return out.parent / f"{out.stem}_images"


def remove_earlier_copies(image_dir: Path) -> int:
    """Delete the copies an earlier `write_swift_rows` listed in `image_dir/WRITTEN`, and the list; every other
    file of the folder stays (another command's images, the user's). Returns how many were deleted."""
    listing = image_dir / WRITTEN
    if not listing.is_file():
        return 0
    removed = 0
    for name in dict.fromkeys(listing.read_text(encoding="utf-8").splitlines()):
        copy = image_dir / name
        if name and Path(name).name == name and not name.startswith(".") and copy.is_file():  # a plain name only
            copy.unlink()
            removed += 1
    listing.unlink()
    return removed


def write_swift_rows(records: Sequence[Record], builder: BaseBuilder, out: Path, *,
                     with_answer: bool = True) -> dict[str, Any]:
    """Write the rows of `records` to `out` (JSONL); images that need turning go upright to
    `upright_dir(out)`, whose earlier copies (those an earlier call listed there) are removed first, so rows
    written over leave no copy that no row names; no other file there is touched. Returns counts and paths."""
    image_dir = upright_dir(out)
    remove_earlier_copies(image_dir)
    upright: dict[str, str] = {}
    rows = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for row in swift_rows(records, builder, with_answer=with_answer):
            row["images"] = [_as_seen(Path(image), image_dir, upright) for image in row["images"]]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows += 1
    return {"rows": rows, "records": len(records), "out": str(out.resolve()), "upright_copies": len(upright),
            "images": str(image_dir) if upright else None}


def _as_seen(path: Path, image_dir: Path, upright: dict[str, str]) -> str:
    """The absolute path of the image as the model sees it (a turned or non-RGB one: its upright copy)."""
    path = path.resolve()
    key = str(path)
    if key not in upright:
        seen = model_input(path)
        if isinstance(seen, str):  # plain RGB: the file itself
            return key
        image_dir.mkdir(parents=True, exist_ok=True)
        name = f"{len(upright):06d}_{path.stem}"
        copy = image_dir / f"{name}.png"
        taken = 1
        while copy.exists():  # a file that is not this command's (its own earlier copies are gone): kept
            copy = image_dir / f"{name}-{taken}.png"
            taken += 1
        with (image_dir / WRITTEN).open("a", encoding="utf-8") as listing:  # listed first: a crash leaves none unlisted
            listing.write(copy.name + "\n")
        seen.save(copy)
        upright[key] = str(copy.resolve())
    return upright[key]
