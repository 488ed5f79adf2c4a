"""Sharded inputs: `custom.train_jsonl` as a list of files or a glob trains on every shard, in order, with
the same records, problems and policies as one file."""

from __future__ import annotations

import json

import pytest

from src.config import ConfigError, load_project_config
from src.datasets.loading import DataError
from src.datasets.plan import plan_data
from tests.config_helpers import write_yaml


@pytest.fixture
def shards(tmp_path, data_dir):
    lines = (data_dir / "train.jsonl").read_text().splitlines()
    folder = tmp_path / "shards"
    folder.mkdir()
    images = str(data_dir)
    parts = [lines[: len(lines) // 2], lines[len(lines) // 2:]]
    for k, part in enumerate(parts):
        # image paths are relative to each JSONL: point them at the original images
        rows = [json.loads(x) for x in part]
        for row in rows:
            row["images"] = [f"{images}/{row['images'][0]}"]
        (folder / f"part-{k:03d}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder, len(lines)


def _config(tree, train):
    t = tree()
    return write_yaml(t.root / "sharded.yaml", {"extends": str(t.config), "custom": {"train_jsonl": train}})


def test_a_list_and_a_glob_of_shards_plan_every_record_in_order(tree, shards, data_dir):
    folder, n = shards
    single = plan_data(load_project_config(tree().config))
    for train in ([str(folder / "part-000.jsonl"), str(folder / "part-001.jsonl")], "shards/part-*.jsonl"):
        cfg = load_project_config(_config(tree, train))
        plan = plan_data(cfg)
        assert [s.path for s in plan.splits[:2]] == [str(folder / "part-000.jsonl"), str(folder / "part-001.jsonl")]
        assert len(plan.train_samples) == len(single.train_samples) == n
        got = [(r.image, r.objects) for group, _ in plan.train_samples for r in group]
        assert got == [(r.image, r.objects) for group, _ in single.train_samples for r in group]


def test_a_glob_that_matches_nothing_is_an_error_naming_the_key(tree):
    with pytest.raises(ConfigError, match=r"`custom.train_jsonl` = .*/nothing-\*\.jsonl: the pattern matches no file"):
        load_project_config(_config(tree, "nothing-*.jsonl"))


def test_a_bad_record_in_one_shard_is_named_by_its_shard_and_line(tree, shards):
    folder, _ = shards
    bad = folder / "part-001.jsonl"
    rows = bad.read_text().splitlines()
    rows[0] = json.dumps({**json.loads(rows[0]), "width": 0})
    bad.write_text("\n".join(rows) + "\n")
    cfg = load_project_config(_config(tree, "shards/*.jsonl"))
    with pytest.raises(DataError, match=f"{bad}:1"):
        plan_data(cfg)
