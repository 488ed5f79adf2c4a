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

from src.datasets.builders import ROW_SOURCE_KEY, BaseBuilder
from src.datasets.contract import Problem, Record
from src.datasets.images import ImageError, is_plain_rgb, load_image

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
        self.bad_images: BadImages | None = None  # what an image that fails to decode leads to (set by the pipeline)
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
        try:
            row = self.row(index)
        except ImageError as err:
            if self.bad_images is None:
                err.add_note(f"while building the sample from {_sources(self.samples[index][0])}")
                raise
            return self.bad_images.failed(self, index, err.path, err.reason)
        if self.bad_images is not None:
            self.bad_images.last = (self, index, row)
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


def _sources(records: Sequence[Record]) -> str:
    return ", ".join(str(r.source) for r in records)


def undecodable(images: Sequence[Any]) -> tuple[str, str] | None:
    """(path, reason) of the first image path in `images` that the project's loader cannot decode fully, or None."""
    for image in images:
        if isinstance(image, str):
            try:
                load_image(image)
            except ImageError as err:
                return err.path, err.reason
    return None


class BadImages:
    """What training does with a sample whose image cannot be decoded (validation read its header only):
    `custom.bad_records` decides. `error`: the run stops with a DataError naming the record's file:line.
    `skip`: the record is listed in `listing` (`skipped_records.jsonl`, one JSON line, `"stage": "training"`)
    and on stderr, once per process, and another sample (the next one not known bad) is trained instead.

    Failures show up in two places: building the row (an image the project's loader decodes) and ms-swift's
    encoding of a plain image handed on as its path (`recover`, called by the pipeline's encode wrapper).
    `last` is the sample this process built last (the dataloader encodes each right after building it)."""

    def __init__(self, policy: str, listing: Path | None, rank: int = 0):
        self.policy = policy
        self.listing = listing
        self.rank = rank
        self.skipped: set[tuple[int, int]] = set()  # (id of the dataset, index) known bad in this process
        self.last: tuple[GroundingRowsDataset, int, dict[str, Any]] | None = None

    def recover(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """After encoding `row` failed: a replacement row when one of its images cannot be decoded (skip), a
        DataError (error); None when no image is at fault (the failure is someone else's)."""
        if self.last is None or self.last[2].get(ROW_SOURCE_KEY) != row.get(ROW_SOURCE_KEY):
            return None
        bad = undecodable(row.get("images", []))
        if bad is None:
            return None
        dataset, index, _ = self.last
        return self.failed(dataset, index, *bad)

    def failed(self, dataset: GroundingRowsDataset, index: int, path: str, reason: str) -> dict[str, Any]:
        """Sample `index` of `dataset` has an image (`path`) that cannot be decoded: raise DataError (error) or
        list it and return another sample's row (skip)."""
        from src.datasets.loading import DataError  # same layer; loading imports heavier modules

        records = dataset.samples[index][0]
        at_fault = [r for r in records if r.image == path] or list(records)
        problems = [Problem(file=r.source.file, line=r.source.line, field="images[0]",
                            message=f"cannot be decoded during training: {reason}", value=path) for r in at_fault]
        if self.policy != "skip":
            raise DataError(problems, problems[0].file)
        if (id(dataset), index) not in self.skipped:
            self.skipped.add((id(dataset), index))
            self._list(problems)
        for step in range(1, len(dataset.samples)):
            other = (index + step) % len(dataset.samples)
            if (id(dataset), other) not in self.skipped:
                return dataset[other]  # itself handled the same way should its image fail too
        raise DataError(problems, problems[0].file)  # no sample left whose images decode

    def _list(self, problems: list[Problem]) -> None:
        import sys

        for p in problems:
            print(f"warning: skipped during training (custom.bad_records: skip): {p}", file=sys.stderr, flush=True)
        if self.listing is None:
            return
        self.listing.parent.mkdir(parents=True, exist_ok=True)
        with self.listing.open("a", encoding="utf-8") as fh:  # one short line per write: ranks may share the file
            for p in problems:
                fh.write(json.dumps({"file": p.file, "line": p.line, "field": p.field, "message": p.message,
                                     "value": repr(p.value), "stage": "training", "rank": self.rank},
                                    ensure_ascii=False) + "\n")


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
