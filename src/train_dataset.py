"""The training dataset handed to ms-swift: records -> rows at `__getitem__`, images through the
project's loader, augmentation drawn anew each epoch.

ms-swift wraps it in its `LazyLLMDataset` (lazy tokenisation, the default for multimodal models),
so encoding happens in the dataloader, sample by sample. Images reach the template as PIL images
loaded by `src.datasets.images.load_image` (EXIF orientation applied, RGB), so the frame the
annotations use is the frame the model sees, at training as at inference. An image that is plain
RGB with no EXIF turn (most are) is handed on as its path instead: every loader reads it the same
way, and ms-swift deep-copies PIL images it is given, which costs about 10 % of encoding speed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from src.datasets.builders import BaseBuilder
from src.datasets.contract import Record
from src.datasets.images import is_plain_rgb, load_image


class GroundingRowsDataset:
    """A sequence of ms-swift rows built on demand from groups of records.

    The augmentation draw for group `i` depends only on (seed, epoch, i): reproducible for a seed,
    new each epoch. `epoch` is set by the trainer callback in `src/pipeline.py`.
    """

    def __init__(self, samples: Sequence[tuple[Sequence[Record], dict[str, str]]], builder: BaseBuilder, *,
                 augment_ops: Sequence = (), augment_prob: float = 0.0, seed: int = 0,
                 rows: Sequence[dict[str, Any]] | None = None):
        # (records of one user turn, the builder's focus for this row), as BasePreprocessor.samples gives them
        self.samples = [(list(g), dict(focus)) for g, focus in samples]
        self.builder = builder
        # Rows already built from these groups (src/data_plan.py): reused when a sample is not augmented.
        self.rows = list(rows) if rows is not None else None
        self.augment_ops = list(augment_ops)
        self.augment_prob = augment_prob
        self.seed = seed
        self.epoch = 0
        self._plain: dict[str, bool] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _augmented(self, index: int, records: list[Record], images: list) -> tuple[list[Record], list]:
        from src.datasets.augment import augment  # only when augmenting

        rng = np.random.default_rng((self.seed, self.epoch, index))
        out_records, out_images = [], []
        for record, image in zip(records, images, strict=True):
            if rng.random() < self.augment_prob:
                image, record, _ = augment(image, record, self.augment_ops, rng)
            out_records.append(record)
            out_images.append(image)
        return out_records, out_images

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} rows")
        records, focus = self.samples[index]
        if self.augment_ops and self.augment_prob > 0:
            records, images = self._augmented(index, records, [load_image(r.image) for r in records])
            row = self.builder.build(records, **focus)
        else:
            images = [r.image if self._is_plain(r.image) else load_image(r.image) for r in records]
            row = self.builder.build(records, **focus) if self.rows is None else dict(self.rows[index])
        row["images"] = images
        return row

    def _is_plain(self, path: str) -> bool:
        if path not in self._plain:
            self._plain[path] = is_plain_rgb(path)
        return self._plain[path]


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def arrow_rows(dataset: GroundingRowsDataset) -> list[dict[str, Any]]:
    """Every row of `dataset` with its images as `{"bytes", "path"}` dicts, for a datasets.Dataset that
    ms-swift encodes up front (packing, the cache): a plain image keeps its path, any other image is
    stored as the project loader decoded it (PNG bytes), so the image rule holds there too."""
    out = []
    for index in range(len(dataset)):
        row = dataset[index]
        row["images"] = [{"bytes": None, "path": im} if isinstance(im, str) else {"bytes": _png(im), "path": None}
                         for im in row["images"]]
        out.append(row)
    return out
