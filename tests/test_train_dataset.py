"""The training dataset: rows per sample, the one image rule, augmentation drawn per (seed, epoch, index)."""

from __future__ import annotations

import json

from PIL import Image

from src.config.prompts import get_prompt_scheme
from src.datasets.augment import parse_augment_ops
from src.datasets.builders import ROW_GEOMETRY_KEY, make_builder
from src.datasets.contract import GroundingObject, Record, SourceRef
from src.datasets.rows import SAMPLE_LOG_ENV, GroundingRowsDataset, SampleLog, answer_digest, arrow_rows
from src.datasets.synth import write_synthetic_dataset
from src.datasets.validation import load_records

BUILDER = make_builder(get_prompt_scheme("dense"), "norm1000", "reading")
OPS = parse_augment_ops([{"op": "rotate", "p": 1.0, "max_degrees": 20}, {"op": "hflip", "p": 0.5}])


def _records(tmp_path):
    write_synthetic_dataset(tmp_path / "data", n=4, val_fraction=0.0)
    records, problems = load_records(tmp_path / "data" / "train.jsonl")
    assert not problems
    return records


def test_plain_images_travel_as_paths_and_rows_match_the_builder(tmp_path):
    records = _records(tmp_path)
    dataset = GroundingRowsDataset([([r], {}) for r in records], BUILDER)
    row = dataset[0]
    assert row["images"] == [records[0].image]
    assert row["messages"] == BUILDER.build([records[0]])["messages"]
    assert len(dataset) == len(records)


def test_an_exif_rotated_photo_reaches_the_template_upright(tmp_path):
    image = Image.new("RGB", (40, 20), (250, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned by 90 degrees: 20 x 40
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif.tobytes())
    record = Record(image=str(path), width=20, height=40, summary=None,
                    objects=(GroundingObject(kind="bbox_2d", points=(1, 1, 10, 10), desc="x"),),
                    source=SourceRef(file=str(tmp_path / "a.jsonl"), line=1))
    loaded = GroundingRowsDataset([([record], {})], BUILDER)[0]["images"][0]
    assert isinstance(loaded, Image.Image) and loaded.size == (20, 40)


def test_augmentation_is_new_each_epoch_and_reproducible(tmp_path):
    records = _records(tmp_path)
    dataset = GroundingRowsDataset([([r], {}) for r in records], BUILDER, augment_ops=OPS, augment_prob=1.0, seed=3)
    first = dataset[1]
    dataset.epoch = 1
    second = dataset[1]
    dataset.epoch = 0
    again = dataset[1]
    assert first[ROW_GEOMETRY_KEY] != second[ROW_GEOMETRY_KEY]
    assert first[ROW_GEOMETRY_KEY] == again[ROW_GEOMETRY_KEY]
    assert first["images"][0].tobytes() == again["images"][0].tobytes()
    geometry = json.loads(first[ROW_GEOMETRY_KEY])[0]
    assert (geometry["width"], geometry["height"]) == first["images"][0].size
    other_seed = GroundingRowsDataset([([r], {}) for r in records], BUILDER, augment_ops=OPS, augment_prob=1.0, seed=4)
    assert other_seed[1][ROW_GEOMETRY_KEY] != first[ROW_GEOMETRY_KEY]


def test_summary_scheme_refuses_augmentation(tmp_path):
    import pytest

    from src.config import ConfigError
    from src.datasets.run_config import load_config_for_run
    from tests.support.offline import REPO

    config = tmp_path / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: ./m\ntraining:\n  output_dir: o\n"
                      "custom:\n  train_jsonl: t.jsonl\n  augment_prob: 0.5\n  augment: [{op: hflip, p: 1.0}]\n"
                      "prompts:\n  scheme: summary\n")
    with pytest.raises(ConfigError, match="summary scheme trains on each record's `summary` text"):
        load_config_for_run(config, check_paths=False)


def test_arrow_rows_keep_plain_paths_and_store_turned_images_upright(tmp_path):
    import io


    records = _records(tmp_path)
    image = Image.new("RGB", (40, 20), (250, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = tmp_path / "photo.jpg"
    image.save(photo, exif=exif.tobytes())
    turned = Record(image=str(photo), width=20, height=40, summary=None,
                    objects=(GroundingObject(kind="bbox_2d", points=(1, 1, 10, 10), desc="x"),),
                    source=SourceRef(file=str(tmp_path / "a.jsonl"), line=1))
    rows = arrow_rows(GroundingRowsDataset([([records[0]], {}), ([turned], {})], BUILDER))
    assert rows[0]["images"] == [{"bytes": None, "path": records[0].image}]
    stored = rows[1]["images"][0]
    assert stored["path"] is None and Image.open(io.BytesIO(stored["bytes"])).size == (20, 40)


def test_padding_to_the_world_size_repeats_the_first_samples(tmp_path):
    records = _records(tmp_path)[:3]
    dataset = GroundingRowsDataset([([r], {}) for r in records], BUILDER, world_size=2)
    assert (len(dataset), dataset.padding) == (4, 1)
    assert dataset[3]["messages"] == dataset[0]["messages"]
    assert len(arrow_rows(dataset)) == 4  # the eagerly encoded path is padded the same way
    alone = GroundingRowsDataset([([r], {}) for r in records], BUILDER)
    assert (len(alone), alone.padding) == (3, 0)


def test_the_sample_log_records_rank_epoch_index_and_the_draw(tmp_path, monkeypatch):
    records = _records(tmp_path)
    monkeypatch.setenv(SAMPLE_LOG_ENV, str(tmp_path / "log"))
    dataset = GroundingRowsDataset([([r], {}) for r in records], BUILDER, augment_ops=OPS, augment_prob=1.0, seed=3)
    dataset.sample_log = SampleLog.from_env(rank=1)
    dataset.epoch = 2
    row = dataset[1]
    dataset.row(0)  # direct access (health check, ms-swift's first-sample print) is not training: not logged
    lines = [json.loads(x) for x in (tmp_path / "log" / "samples-rank1.jsonl").read_text().splitlines()]
    assert lines == [{"rank": 1, "epoch": 2, "index": 1, "answer_sha1": answer_digest(row)}]
    dataset.epoch = 3
    assert answer_digest(dataset.row(1)) != lines[0]["answer_sha1"]  # another epoch, another draw
