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


def test_the_folders_of_the_images_read_from_the_columns_equal_those_of_the_records(jsonl, tmp_path):
    """What `run.overwrite` must never move (src/training/setup.py): read without making a Record each."""
    import shutil

    from src.datasets.columns import RecordSubset, image_folders
    from src.datasets.loading import ConcatRecords

    lines = jsonl.read_text().splitlines()
    first = json.loads(lines[0])
    elsewhere = tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    picture = jsonl.parent / first["images"][0]
    shutil.copy(picture, elsewhere / picture.name)
    (jsonl.parent / "sub").mkdir()
    shutil.copy(picture, jsonl.parent / "sub" / picture.name)
    lines += [json.dumps({**first, "images": [str(elsewhere / picture.name)]}),
              json.dumps({**first, "images": [f"sub/../sub/{picture.name}"]})]
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = VerdictStore(tmp_path / "store")
    records = validated_records(jsonl, store=store)[0]
    table = validated_records(jsonl, store=store)[0]
    expected = {os.path.dirname(r.image) for r in records}
    assert expected == {str(picture.parent), str(elsewhere), str(jsonl.parent / "sub")}
    assert image_folders(table) == expected == image_folders(list(records))
    assert image_folders(ConcatRecords([table, RecordSubset(table, left_out=[0])])) == expected


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


def test_an_edit_keeping_size_and_time_anywhere_in_a_large_file_is_caught(tmp_path):
    """The whole content is digested, not its first and last MiB: a same-size, same-mtime edit in the middle
    of a 3 MB file gives another key (issue 21: the dry run trained on the stale verdict)."""
    path = tmp_path / "big.jsonl"
    line = '{"images": ["a.png"], "width": 10, "height": 10, "objects": []}\n'
    lines = [line] * 50_000
    path.write_text("".join(lines))
    stat = path.stat()
    before = verdicts.file_key(path, {"check_image": "header"})
    lines[25_000] = line.replace('"width": 10', '"width": 99')
    path.write_text("".join(lines))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert verdicts.file_key(path, {"check_image": "header"}) != before


def test_a_forced_pass_replaces_the_stored_verdict(jsonl, tmp_path):
    """An image replaced after the verdict: the stored verdict is stale until a forced pass, which replaces
    it: afterwards every read gives the new verdict, never the old one beside it."""
    from PIL import Image

    store = VerdictStore(tmp_path / "store")
    records, problems, _ = validated_records(jsonl, store=store)
    image = records[0].image
    Image.new("RGB", (7, 5)).save(image)  # another size than its record says
    assert len(validated_records(jsonl, store=store)[0]) == len(records)  # the documented staleness
    forced = validated_records(jsonl, store=store, revalidate=True)
    assert len(forced[0]) == len(records) - 1 and len(forced[1]) == len(problems) + 1
    again = validated_records(jsonl, store=store)
    assert again[2] is True and [str(p) for p in again[1]] == [str(p) for p in forced[1]]
    assert len(list((tmp_path / "store").glob("*.verdict"))) == 1  # replaced, not kept beside the new one


def test_a_decoded_verdict_answers_a_header_request_and_a_forced_header_pass_replaces_it(jsonl, tmp_path):
    store = VerdictStore(tmp_path / "store")
    validated_records(jsonl, store=store, check_image="decode")
    assert validated_records(jsonl, store=store, check_image=True)[2] is True  # True decodes too
    assert validated_records(jsonl, store=store)[2] is True  # header: the stricter verdict serves
    validated_records(jsonl, store=store, revalidate=True)
    assert validated_records(jsonl, store=store)[2] is True
    assert validated_records(jsonl, store=store, check_image="decode")[2] is False  # the older one went


def _entries(store):
    return sorted(p.name for p in store.root.glob("*.verdict"))


def test_the_store_evicts_the_least_recently_used_beyond_its_size_limit(tmp_path, monkeypatch):
    import time

    store = VerdictStore(tmp_path / "store")
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}.jsonl"
        path.write_text(f'{{"images": ["x{i}.png"], "width": 1, "height": 1, "objects": []}}\n')
        files.append(path)
    store.put(files[0], {"check_image": False}, Verdict(records=[], problems=[]))
    one = _entries(store)
    entry_bytes = sum(f.stat().st_size for f in (store.root / one[0]).iterdir())
    monkeypatch.setenv(verdicts.MAX_MB_ENV, str(2.5 * entry_bytes / (1 << 20)))  # room for two entries
    os.utime(store.root / one[0], (time.time() - 100,) * 2)  # written a while ago
    store.put(files[1], {"check_image": False}, Verdict(records=[], problems=[]))
    os.utime(next(p for p in store.root.glob("*.verdict") if p.name != one[0]), (time.time() - 50,) * 2)
    assert store.get(files[0], {"check_image": False}) is not None  # a read: f0 is now the most recently used
    store.put(files[2], {"check_image": False}, Verdict(records=[], problems=[]))
    assert len(_entries(store)) == 2
    assert store.get(files[0], {"check_image": False}) is not None  # kept: used after f1
    assert store.get(files[2], {"check_image": False}) is not None  # the newest is always kept
    assert store.get(files[1], {"check_image": False}) is None  # the least recently used went


def test_the_store_evicts_entries_unused_past_the_age_limit_and_refuses_a_bad_limit(jsonl, tmp_path, monkeypatch):
    import time

    from src.config import ConfigError

    store = VerdictStore(tmp_path / "store")
    validated_records(jsonl, store=store)
    (store.root / "dead.tmp").mkdir()
    os.utime(store.root / "dead.tmp", (1e9, 1e9))  # a writer that died long ago
    monkeypatch.setenv(verdicts.MAX_AGE_ENV, "1")
    assert store.evict(now=time.time() + 3600) == []  # used an hour ago: within a day
    removed = store.evict(now=time.time() + 2 * 86400)
    assert len(removed) == 1 and _entries(store) == [] and not (store.root / "dead.tmp").exists()
    monkeypatch.setenv(verdicts.MAX_MB_ENV, "lots")
    with pytest.raises(ConfigError, match=r"\$GROUNDING_CACHE_MAX_MB = 'lots': expected a number >= 0"):
        validated_records(jsonl, store=store, revalidate=True)
