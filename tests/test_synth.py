"""Synthetic data: deterministic, split as asked, valid under the contract, and labelled with
exactly what was drawn."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from src.datasets import geometry as g
from src.datasets.__main__ import main
from src.datasets.images import load_image
from src.datasets.synth import COLOURS, write_synthetic_dataset
from src.datasets.validation import load_records

N = 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, write_synthetic_dataset(out, N, seed=7, val_fraction=0.25)


@pytest.fixture(scope="module")
def records(dataset):
    out, _ = dataset
    loaded = []
    for name in ("train.jsonl", "val.jsonl"):
        recs, problems = load_records(out / name, check_image=True)
        assert problems == [], [str(p) for p in problems]
        loaded.extend(recs)
    return loaded


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_counts_and_split(dataset, records):
    out, result = dataset
    assert (result["n_train"], result["n_val"]) == (18, 6)
    assert result["train"] == str(out / "train.jsonl") and result["val"] == str(out / "val.jsonl")
    assert len(list((out / "images").glob("*.png"))) == N
    assert len(records) == N
    kinds = [o.kind for r in records for o in r.objects]
    assert result["n_objects"] == len(kinds)
    assert result["objects_by_kind"] == {"bbox_2d": kinds.count("bbox_2d"), "quad": kinds.count("quad")}
    assert all(1 <= len(r.objects) <= 4 for r in records)
    assert sum(r.width != r.height for r in records) > N // 2
    assert all(96 <= r.width <= 192 and 96 <= r.height <= 192 for r in records)


def test_records_use_relative_paths_and_summaries(dataset):
    out, _ = dataset
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert first["images"] == ["images/000001.png"]
    descs = [o["desc"] for o in first["objects"]]
    noun = "object" if len(descs) == 1 else "objects"
    assert first["summary"] == f"{len(descs)} {noun}: " + ", ".join(descs)


def test_all_descriptions_come_from_the_small_vocabulary(records):
    for rec in records:
        for obj in rec.objects:
            if obj.desc.startswith("text: "):
                assert obj.kind == "quad" and len(obj.desc) == len("text: ABC")
                continue
            colour, shape = obj.desc.split()
            assert colour in COLOURS
            assert shape in {"rectangle", "circle", "tag"}
            assert obj.kind == ("quad" if shape == "tag" else "bbox_2d")


def _colour_mask(pixels: np.ndarray, rgb, box, pad: int) -> tuple[np.ndarray, int, int]:
    h, w = pixels.shape[:2]
    x1, y1 = max(int(box[0]) - pad, 0), max(int(box[1]) - pad, 0)
    x2, y2 = min(int(np.ceil(box[2])) + pad, w), min(int(np.ceil(box[3])) + pad, h)
    region = pixels[y1:y2, x1:x2]
    return np.all(region == rgb, axis=-1), x1, y1


def _mask_bbox(mask: np.ndarray, x0: int, y0: int) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [xs.min() + x0, ys.min() + y0, xs.max() + 1 + x0, ys.max() + 1 + y0]


def test_boxes_are_the_tight_bounds_of_the_drawn_pixels(records):
    checked = 0
    for rec in records:
        pixels = np.asarray(load_image(rec.image))
        for obj in rec.objects:
            if obj.kind != "bbox_2d":
                continue
            rgb = COLOURS[obj.desc.split()[0]]
            mask, x0, y0 = _colour_mask(pixels, rgb, obj.points, pad=2)
            # exact, though the contract only needs 1 px: both come from the same mask
            assert _mask_bbox(mask, x0, y0) == list(obj.points)
            checked += 1
    assert checked > 5


def test_quads_enclose_the_drawn_pixels(records):
    checked = 0
    for rec in records:
        pixels = np.asarray(load_image(rec.image))
        for obj in rec.objects:
            if obj.kind != "quad":
                continue
            assert g.quad_is_valid(obj.points) is None
            quad = np.array(obj.points)
            np.testing.assert_array_equal(g.canonical_quad8(quad[None])[0], quad)
            box = g.quad8_to_xyxy(quad[None])[0]
            # other objects keep >= 3 px away, so every pixel of the colour nearby is this one
            colours = [COLOURS[obj.desc.split()[0]]] if "tag" in obj.desc else COLOURS.values()
            ink = [(_colour_mask(pixels, rgb, box, pad=2)) for rgb in colours]
            ink = [(m, x0, y0) for m, x0, y0 in ink if m.any()]
            assert len(ink) == 1, obj.desc
            drawn = _mask_bbox(*ink[0])
            if "tag" in obj.desc:  # a filled rotated rectangle fills its quad
                np.testing.assert_allclose(drawn, box, atol=1.5)
            else:  # letters lie inside their quad (its corners may hold no ink)
                assert drawn[0] >= box[0] - 1 and drawn[1] >= box[1] - 1
                assert drawn[2] <= box[2] + 1 and drawn[3] <= box[3] + 1
            checked += 1
    assert checked > 5


def test_objects_do_not_overlap(records):
    for rec in records:
        boxes = np.array(
            [o.points if o.kind == "bbox_2d" else g.quad8_to_xyxy(np.array([o.points]))[0] for o in rec.objects]
        )
        iou = g.box_iou_xyxy(boxes, boxes)
        assert np.allclose(iou - np.eye(len(boxes)), 0, atol=0.05)


def test_deterministic_byte_for_byte(dataset, tmp_path: Path):
    out, _ = dataset
    again = tmp_path / "again"
    write_synthetic_dataset(again, N, seed=7, val_fraction=0.25)
    assert digest(again) == digest(out)
    other = tmp_path / "other"
    write_synthetic_dataset(other, N, seed=8, val_fraction=0.25)
    assert digest(other) != digest(out)


def test_refuses_a_non_empty_directory_unless_overwrite(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not empty; pass --overwrite"):
        write_synthetic_dataset(tmp_path, 3)
    result = write_synthetic_dataset(tmp_path, 3, overwrite=True)
    assert result["n_train"] + result["n_val"] == 3
    write_synthetic_dataset(tmp_path, 2, overwrite=True)  # a smaller rerun leaves no stale images
    assert len(list((tmp_path / "images").iterdir())) == 2
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"n": 2, "val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"n": 2, "seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_synthetic_dataset(tmp_path / "d", **kwargs)


def test_cli(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--n", "5", "--seed", "3"]) == 0
    assert "wrote 4 train + 1 val images" in capsys.readouterr().out
    assert main(["synth", "--out", str(out), "--n", "5"]) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--n", "5", "--overwrite"]) == 0
    assert main(["validate", str(out / "train.jsonl"), str(out / "val.jsonl")]) == 0
