"""The builder contract: a group of validated records -> one ms-swift row (`messages` + `images`) per question.

A row is one conversation: a system turn, a user turn holding one `<image>` per record and the prompt
scheme's question, and (for training) the assistant's answer. The pixel geometry rides along on the
row (`geometry_px`) so checks can compare the encoded labels with it, and `source` names the records'
file:line. Subclasses write `answer`, with the builder's answer codec (`codec`, src/datasets/builders/codec.py)
when it holds coordinates; the registry in `__init__.py` names them.

`geometry_px` is JSON text because a row must stay plain data: ms-swift encodes rows up front from a
`datasets.Dataset` (`src.datasets.rows.arrow_rows`: packing, the pre-encoded cache), `swift_rows` writes them
as JSONL for `swift infer`, and the health check runs on the rows that come back out of Arrow. It is
written by `geometry_payload` and read by `row_geometry` only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from src.config.prompts import PromptScheme
from src.datasets.contract import Record
from src.datasets.objects import GeoObject

from .codec import AnswerCodec

ROW_GEOMETRY_KEY = "geometry_px"
ROW_SOURCE_KEY = "source"


def geometry_payload(records: Sequence[Record]) -> str:
    """The pixel geometry of a row's records as JSON text (image index, size, kind, points, desc; `"ignore": true`
    on an ignore region, which the answer leaves out)."""
    return json.dumps([
        {"image": i, "width": r.width, "height": r.height,
         "objects": [{"kind": o.kind, "points": list(o.points), "desc": o.desc,
                      **({"ignore": True} if o.ignore else {})} for o in r.objects]}
        for i, r in enumerate(records, start=1)
    ], ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ImageGeometry:
    """One image of a row's pixel geometry: its 1-based index in the turn, its size, its objects in pixels."""

    image: int
    width: int
    height: int
    objects: tuple[GeoObject, ...]


def row_geometry(row: dict[str, Any]) -> list[ImageGeometry]:
    """The pixel geometry of a row (`ROW_GEOMETRY_KEY`), read back as `geometry_payload` wrote it: the inverse."""
    return [ImageGeometry(image["image"], image["width"], image["height"],
                          tuple(GeoObject(o["kind"], tuple(o["points"]), o["desc"], ignore=bool(o.get("ignore")))
                                for o in image["objects"]))
            for image in json.loads(row[ROW_GEOMETRY_KEY])]


class BaseBuilder:
    """Builds ms-swift rows from a group of records. Subclasses implement `answer`.

    A group gives one row per entry of `focuses(records)`: `{}` (one row) for most builders; the
    description builder asks about one description at a time. `answers_with_geometry` says whether
    the answer holds coordinates (the health check compares them with the pixel geometry).
    """

    answers_with_geometry: ClassVar[bool] = True
    asks_several_questions: ClassVar[bool] = False  # True when `focuses` can give more than `[{}]`

    def __init__(self, scheme: PromptScheme, *, emit_norm: str, object_order: str):
        self.scheme = scheme
        self.emit_norm = emit_norm
        self.object_order = object_order
        self.codec = AnswerCodec(emit_norm, object_order)
        """Writes this builder's answers and reads them back (src/datasets/builders/codec.py)."""

    def check_records(self, records: Sequence[Record]) -> None:
        """Raise ConfigError when some of `records` cannot be answered by this builder (checked before a
        run starts, since rows are built later, one by one). Every valid record can, by default."""

    def focuses(self, records: Sequence[Record]) -> list[dict[str, str]]:
        """The questions to ask about this group: keyword arguments for `build`, one row each."""
        return [{}]

    def user_text(self, records: Sequence[Record], **focus: str) -> str:
        """The user turn: one `<image>` per record, then the scheme's question."""
        text = self.scheme.user.replace("{n_images}", str(len(records)))
        for key, value in focus.items():
            text = text.replace("{" + key + "}", value)
        return "<image>" * len(records) + text

    def answer(self, records: Sequence[Record]) -> str:
        """The assistant's answer for these records (as `focused` narrowed them)."""
        raise NotImplementedError

    def focused(self, records: Sequence[Record], **focus: str) -> list[Record]:
        """The records as the answer sees them (all objects, unless a subclass narrows them)."""
        return list(records)

    def build(self, records: Sequence[Record], *, with_answer: bool = True, **focus: str) -> dict[str, Any]:
        """The row: messages (system, user, assistant unless `with_answer=False`), images and checks data."""
        records = self.focused(records, **focus)
        messages = [{"role": "system", "content": self.scheme.system},
                    {"role": "user", "content": self.user_text(records, **focus)}]
        if with_answer:
            messages.append({"role": "assistant", "content": self.answer(records)})
        return {
            "messages": messages,
            "images": [r.image for r in records],
            ROW_GEOMETRY_KEY: geometry_payload(records),
            ROW_SOURCE_KEY: ", ".join(str(r.source) for r in records),
        }
