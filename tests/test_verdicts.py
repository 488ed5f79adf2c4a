"""Validation once, remembered: a stored verdict is reused while the file, the rules and the options are
unchanged, and exactly what a full pass would give."""

from __future__ import annotations

import json
import os

import pytest

from src.datasets import verdicts
from src.datasets.loading import load_split, validated_records
from src.datasets.verdicts import Verdict, VerdictStore


@pytest.fixture
def jsonl(tmp_path):
    from src.datasets.synth import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n=6, val_fraction=0.0)
    path = tmp_path / "data" / "train.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    record["objects"][0]["desc"] = "größer 标签 ✓"  # unicode labels survive the store
    record["summary"] = ""
    lines[0] = json.dumps(record, ensure_ascii=False)
    bad = json.loads(lines[1])
    bad["objects"][0]["bbox_2d"] = [5, 5, 1, 1]  # x2 < x1: a problem with a value
    lines[1] = json.dumps(bad)
    lines.append('{"images": ["nope.png"], "objects": [], "width": 0, "height": 10}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _full(path, check_image="header"):
    records, problems, _ = validated_records(path, check_image=check_image, store=None)
    return list(records), problems


def test_an_unchanged_file_reuses_the_stored_verdict_exactly(jsonl, tmp_path):
    store = VerdictStore(tmp_path / "store")
    first = validated_records(jsonl, store=store)
    again = validated_records(jsonl, store=store)
    assert (first[2], again[2]) == (False, True)  # validated once, then read back
    records, problems = _full(jsonl)
    assert list(again[0]) == records  # every field: coordinates, labels, sizes, summary ("" vs None), clamps, source
    assert [str(p) for p in again[1]] == [str(p) for p in problems] and len(problems) >= 2
    assert len(list((tmp_path / "store").glob("*.verdict"))) == 1


def test_a_changed_file_option_or_rule_is_validated_again(jsonl, tmp_path, monkeypatch):
    store = VerdictStore(tmp_path / "store")
    validated_records(jsonl, store=store)
    assert validated_records(jsonl, store=store, check_image=False)[2] is False  # another option
    text = jsonl.read_text(encoding="utf-8")
    stat = jsonl.stat()
    jsonl.write_text(text.replace('"width": 0', '"width": 9'), encoding="utf-8")  # same size
    os.utime(jsonl, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time
    records, problems, stored = validated_records(jsonl, store=store)
    assert not stored and [str(p) for p in problems] == [str(p) for p in _full(jsonl)[1]]
    monkeypatch.setattr(verdicts, "CONTRACT_VERSION", verdicts.CONTRACT_VERSION + 1)
    assert validated_records(jsonl, store=store)[2] is False  # new rules: the old verdicts do not count


def test_a_forced_pass_ignores_the_store_and_a_damaged_entry_is_a_miss(jsonl, tmp_path):
    store = VerdictStore(tmp_path / "store")
    validated_records(jsonl, store=store)
    assert validated_records(jsonl, store=store, revalidate=True)[2] is False
    entry = next((tmp_path / "store").glob("*.verdict"))
    (entry / "points.npy").write_bytes(b"not an array")
    assert store.get(jsonl, {"check_image": "header"}) is None
    assert validated_records(jsonl, store=store)[2] is False
    assert validated_records(jsonl, store=store)[2] is True  # the damaged entry was replaced


def test_the_policies_work_the_same_on_a_stored_verdict(jsonl, tmp_path):
    from src.datasets.loading import DataError

    store = VerdictStore(tmp_path / "store")
    fresh = load_split(jsonl, "skip", store=store)
    stored = load_split(jsonl, "skip", store=store)
    assert (fresh.from_store, stored.from_store) == (False, True)
    assert list(stored.records) == list(fresh.records) and stored.skipped_lines == fresh.skipped_lines
    with pytest.raises(DataError) as err:
        load_split(jsonl, "error", store=store)
    assert "invalid record(s)" in str(err.value) and f"{jsonl}:2" in str(err.value)


def test_an_empty_file_and_an_empty_verdict_round_trip(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    store = VerdictStore(tmp_path / "store")
    store.put(path, {"check_image": "header"}, Verdict(records=[], problems=[]))
    got = store.get(path, {"check_image": "header"})
    assert list(got.records) == [] and got.problems == []


def test_a_second_dry_run_reads_the_verdict_and_revalidate_forces_a_full_pass(tree, capsys):
    from src.sft import main

    config = tree().config
    assert main(["--config", str(config), "--dry-run"]) == 0
    assert "stored verdict" not in capsys.readouterr().out
    assert main(["--config", str(config), "--dry-run"]) == 0
    assert "(stored verdict: unchanged since validated)" in capsys.readouterr().out
    assert main(["--config", str(config), "--dry-run", "--revalidate"]) == 0
    assert "stored verdict" not in capsys.readouterr().out


def test_stored_records_stay_columnar_and_are_made_when_asked_for(jsonl, tmp_path):
    from src.datasets.columns import RecordTable

    store = VerdictStore(tmp_path / "store")
    records = validated_records(jsonl, store=store)[0]
    table = validated_records(jsonl, store=store)[0]
    assert isinstance(table, RecordTable) and len(table) == len(records)
    assert table[-1] == records[-1] and table[1:3] == records[1:3] and table[0] == records[0]
    with pytest.raises(IndexError):
        table[len(records)]


def test_one_record_per_turn_gives_lazy_samples_equal_to_the_eager_ones(jsonl, tmp_path):
    from src.config.prompts import get_prompt_scheme
    from src.datasets.builders import make_builder
    from src.datasets.preprocessors import BasePreprocessor, GroupingPreprocessor

    table = validated_records(jsonl, store=VerdictStore(tmp_path / "store"))[0]
    table = validated_records(jsonl, store=VerdictStore(tmp_path / "store"))[0]  # now from the store
    dense = GroupingPreprocessor(make_builder(get_prompt_scheme("dense"), "norm1000", "reading"),
                                 images_per_user_turn=1, seed=0)
    lazy = dense.samples(table)
    assert not isinstance(lazy, list) and len(lazy) == len(table)
    assert list(lazy) == BasePreprocessor.samples(dense, list(table)) and lazy[1:2] == [([table[1]], {})]
    grounding = GroupingPreprocessor(make_builder(get_prompt_scheme("grounding"), "norm1000", "reading"),
                                     images_per_user_turn=1, seed=0)
    assert isinstance(grounding.samples(table), list)  # several questions per record: planned up front


def test_stored_columns_are_memory_mapped_not_copied(jsonl, tmp_path):
    """Fresh or read back, a stored verdict's records map the store's files: the ranks of a node share them."""
    import numpy as np

    store = VerdictStore(tmp_path / "store")
    for records, _, _ in (validated_records(jsonl, store=store), validated_records(jsonl, store=store)):
        assert all(isinstance(records.columns[name], np.memmap) for name in ("points", "images", "lines", "kinds"))
        assert str(tmp_path / "store") in str(records.columns["points"].filename)
    assert list(records) == _full(jsonl)[0]
