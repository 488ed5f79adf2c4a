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

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.datasets.builders import BaseBuilder
from src.datasets.contract import Record
from src.datasets.images import is_plain_rgb, load_image

_PLAIN_MEMO_SIZE = 1 << 16  # header answers remembered per process (about 10 MB at most)


class GroundingRowsDataset:
    """A sequence of ms-swift rows built on demand from groups of records.

    The augmentation draw for group `i` depends only on (seed, epoch, i): reproducible for a seed,
    new each epoch, the same whatever the number of ranks. `epoch` is set by the trainer callback in
    `src/training/pipeline.py`.

    `world_size` > 1 pads the length up to a multiple of it, the extra positions repeating the first
    samples: ms-swift's distributed sampler draws from `len // world_size * world_size` positions only,
    so without padding the last `len % world_size` samples would never be trained. With padding every
    sample is trained each epoch (fewer than `world_size` of them twice).
    """

    def __init__(self, samples: Sequence[tuple[Sequence[Record], dict[str, str]]], builder: BaseBuilder, *,
                 augment_ops: Sequence = (), augment_prob: float = 0.0, seed: int = 0,
                 rows: Sequence[dict[str, Any]] | None = None, world_size: int = 1):
        # (records of one user turn, the builder's focus for this row), as BasePreprocessor.samples gives them;
        # kept as given (possibly lazy: made per index), never copied into a list of every sample.
        self.samples = samples
        self.builder = builder
        # Rows built beforehand for these samples, reused when a sample is not augmented (bench/encode_speed.py).
        self.rows = list(rows) if rows is not None else None
        self.augment_ops = list(augment_ops)
        self.augment_prob = augment_prob
        self.seed = seed
        self.epoch = 0
        self.world_size = max(1, world_size)
        self.sample_log: SampleLog | None = None  # set when training starts (src/training/pipeline.py)
        self._plain: dict[str, bool] = {}

    def __len__(self) -> int:
        n = len(self.samples)
        return -(-n // self.world_size) * self.world_size if n else 0

    @property
    def padding(self) -> int:
        """Positions past the real samples (each repeats sample `position - len(samples)`)."""
        return len(self) - len(self.samples)

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

    def __getitem__(self, position: int) -> dict[str, Any]:
        if not 0 <= position < len(self):
            raise IndexError(f"index {position} out of range for {len(self)} rows")
        index = position % len(self.samples)
        row = self.row(index)
        if self.sample_log is not None:
            self.sample_log.write(self.epoch, index, row)
        return row

    def row(self, index: int) -> dict[str, Any]:
        """The ms-swift row of sample `index` (augmented when drawn so for the current epoch)."""
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
        found = self._plain.get(path)
        if found is None:
            if len(self._plain) >= _PLAIN_MEMO_SIZE:  # a million distinct images must not grow it forever
                self._plain.clear()
            found = self._plain[path] = is_plain_rgb(path)
        return found


SAMPLE_LOG_ENV = "GROUNDING_SAMPLE_LOG"


def answer_digest(row: dict[str, Any]) -> str:
    """SHA-1 of a row's last message (the answer): equal digests mean equal targets, augmentation included."""
    answer = json.dumps(row.get("messages", [])[-1:], sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(answer.encode("utf-8")).hexdigest()


class SampleLog:
    """Appends `{"rank", "epoch", "index", "answer_sha1"}` per training sample to
    `<dir>/samples-rank<R>.jsonl`: which samples each rank trained on, and (through the answer's digest)
    which augmentation draw each got. Turned on by the environment variable GROUNDING_SAMPLE_LOG=<dir>
    (for debugging data order across ranks and resumes; also settable in a config's `env:`)."""

    def __init__(self, directory: str | Path, rank: int):
        self.path = Path(directory) / f"samples-rank{rank}.jsonl"
        self.rank = rank
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls, rank: int) -> SampleLog | None:
        """A log into $GROUNDING_SAMPLE_LOG, or None when the variable is unset."""
        directory = os.environ.get(SAMPLE_LOG_ENV)
        return cls(directory, rank) if directory else None

    def write(self, epoch: int, index: int, row: dict[str, Any]) -> None:
        """Append one line (opened per call: dataloader workers are separate processes)."""
        line = {"rank": self.rank, "epoch": epoch, "index": index, "answer_sha1": answer_digest(row)}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def arrow_rows(dataset: GroundingRowsDataset) -> list[dict[str, Any]]:
    """Every row of `dataset` with its images as `{"bytes", "path"}` dicts, for a datasets.Dataset that
    ms-swift encodes up front (packing, the cache): a plain image keeps its path, any other image is
    stored as the project loader decoded it (PNG bytes), so the image rule holds there too."""
    out = []
    for position in range(len(dataset)):  # padded positions too (see GroundingRowsDataset)
        row = dataset.row(position % len(dataset.samples))
        row["images"] = [{"bytes": None, "path": im} if isinstance(im, str) else {"bytes": _png(im), "path": None}
                         for im in row["images"]]
        out.append(row)
    return out
