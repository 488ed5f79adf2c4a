"""Faults end cleanly (issue 21): a full disk and a read-only run directory give one message naming the
directory, the reason and the last whole checkpoint (exit 3, no `inline_container.cc` traceback), and leave
that checkpoint whole; a truncated image is found before step 1 when asked (`validate --decode`,
`custom.decode_images`), and one met during training follows `custom.bad_records`.

The full disk is real: a tmpfs of 800 KB mounted on the run directory in a private mount namespace
(`unshare -rm`), so every write of the run (torch.save, safetensors, the logs) meets ENOSPC as it would on
a full disk. The read-only directory is a real read-only bind mount (root ignores chmod, so a chmod'ed
folder would prove nothing here). Where mount namespaces are not allowed the tests skip, saying so.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model
from src.training.checkpoint_guard import checkpoint_problem
from src.training.run_dir import resolve_resume, skipped_notes

REPO = Path(__file__).resolve().parents[1]


def _can_mount(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {probe}"],
                          capture_output=True, text=True)
    return done.returncode == 0


def _in_namespace(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full_disk_run(tmp_path_factory):
    """A run whose directory (a tmpfs of 800 KB: about two checkpoints of the tiny model) fills up while it
    saves; (result, a copy of the directory as the run left it, the config)."""
    root = tmp_path_factory.mktemp("faults")
    if not _can_mount(root):
        pytest.skip("no private mount namespace here (unshare -rm): a full disk cannot be made honestly")
    build_tiny_model(root / "model")
    write_synthetic_dataset(root / "data", n=4)
    out, copy = root / "out", root / "left"
    out.mkdir()
    copy.mkdir()
    config = root / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: {root / 'model'}\n"
                      f"custom:\n  train_jsonl: {root / 'data' / 'train.jsonl'}\n  health_check_samples: 0\n"
                      f"tuner:\n  resume_from_checkpoint: auto\n"
                      f"training:\n  output_dir: {out}\n  max_steps: 8\n  save_strategy: steps\n  save_steps: 1\n"
                      "  logging_steps: 1\n  eval_strategy: 'no'\n")
    train = shlex.join([sys.executable, "-m", "src.sft", "--config", str(config)])
    result = _in_namespace(f"mount -t tmpfs -o size=800k none {out} && {train}; rc=$?; "
                           f"cp -a {out}/. {copy}/; exit $rc")
    return result, copy, config


@pytest.mark.slow
def test_a_full_disk_ends_with_one_message_and_the_last_whole_checkpoint_intact(full_disk_run):
    result, left, _ = full_disk_run
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    message = result.stderr.strip().splitlines()
    error = next(i for i, line in enumerate(message) if line.startswith("error: cannot write to the run directory"))
    text = "\n".join(message[error:])
    assert "no space is left on its device" in text or "a write failed (torch.save)" in text, text
    assert "MB free there now" in text and "first free space on that device" in text
    assert "Traceback" not in "\n".join(message[error:]) and "enforce fail" not in text
    whole = resolve_resume(left, "auto")
    assert whole is not None and checkpoint_problem(Path(whole)) is None  # still whole: resumable
    step = int(Path(whole).name.split("-")[1])
    assert 1 <= step < 8
    assert f"last whole checkpoint: {left.parent / 'out' / Path(whole).name}" in text
    torn = skipped_notes(left, whole)  # what the disk cut short is named, never resumed from
    assert torn and f"checkpoint-{step + 1} " in torn[0] and f"checkpoint-{step + 1} " in text


@pytest.mark.slow
def test_a_read_only_run_directory_gives_one_message_and_changes_nothing(full_disk_run, tmp_path):
    _, left, config = full_disk_run
    out = Path(config.read_text().split("output_dir: ")[1].splitlines()[0])
    before = _digests(left)
    train = shlex.join([sys.executable, "-m", "src.sft", "--config", str(config)])
    # The run's own directory path, made a read-only view of what the full disk left.
    result = _in_namespace(f"mount --bind {left} {out} && mount -o remount,bind,ro {out} && {train}")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"cannot write to the run directory {out}: it is on a read-only file system" in result.stderr
    assert f"make {out} writable" in result.stderr
    assert "last whole checkpoint: " in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert _digests(left) == before


# ---------------------------------------------------------------------------- images that do not decode


def _truncated_jpeg(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # the header intact, the pixels cut
    return path


def _with_truncated_images(data: Path) -> tuple[Path, list[int]]:
    """Append two records whose JPEGs are cut in half (one RGB: handed to ms-swift as a path and decoded
    there; one grey: decoded by the project's loader when the row is built); (train.jsonl, their lines)."""
    import json

    train = data / "train.jsonl"
    lines = train.read_text().splitlines()
    record = json.loads(lines[0])
    size = (record["width"], record["height"])
    for name, mode in (("cut_rgb.jpg", "RGB"), ("cut_grey.jpg", "L")):
        _truncated_jpeg(data / "images" / name, size, mode)
        lines.append(json.dumps({**record, "images": [f"images/{name}"]}))
    train.write_text("\n".join(lines) + "\n")
    return train, [len(lines) - 1, len(lines)]


def test_validate_decode_finds_a_truncated_jpeg_that_the_header_check_passes(tmp_path, capsys):
    from src.datasets.__main__ import main

    write_synthetic_dataset(tmp_path / "data", n=3, val_fraction=0.0)
    train, bad = _with_truncated_images(tmp_path / "data")
    assert main(["validate", "--decode", str(train)]) == 1
    out = capsys.readouterr().out
    for line in bad:
        assert f"{train}:{line}: images[0]: cannot decode image: image file is truncated" in out
    with pytest.raises(SystemExit) as usage:  # one or the other: argparse's usage error
        main(["validate", "--decode", "--no_image_check", str(train)])
    assert usage.value.code == 2 and "not allowed with argument --decode" in capsys.readouterr().err


def test_decode_images_finds_them_before_training_and_the_verdict_remembers_it(tree, tmp_path, capsys):
    from src.sft import main

    t = tree("custom:\n  bad_records: skip\n  decode_images: true\n")
    train, bad = _with_truncated_images(t.train_jsonl.parent)
    assert main(["--config", str(t.config), "--dry-run"]) == 0
    first = capsys.readouterr().out
    for line in bad:
        assert f"{train}:{line}: images[0]: cannot decode image" in first
    assert main(["--config", str(t.config), "--dry-run"]) == 0
    second = capsys.readouterr().out
    assert "stored verdict" in second and f"{train}:{bad[0]}: images[0]: cannot decode image" in second
    header_only = tree("custom:\n  bad_records: error\n  decode_images: false\n")
    assert main(["--config", str(header_only.config), "--dry-run", "--revalidate"]) == 0  # headers pass
    capsys.readouterr()


def test_an_image_that_fails_to_decode_while_building_a_row_follows_bad_records(tmp_path):
    from src.config.prompts import get_prompt_scheme
    from src.datasets.builders import make_builder
    from src.datasets.loading import DataError, load_split
    from src.datasets.rows import BadImages, GroundingRowsDataset

    write_synthetic_dataset(tmp_path / "data", n=3, val_fraction=0.0)
    train, bad = _with_truncated_images(tmp_path / "data")
    records = list(load_split(train, "error").records)  # headers only: every record passes
    builder = make_builder(get_prompt_scheme("dense"), "norm1000", "reading")
    samples = [([r], {}) for r in records]
    grey = len(records) - 1  # the grey JPEG: decoded by the project's loader while its row is built
    listing = tmp_path / "out" / "skipped_records.jsonl"
    dataset = GroundingRowsDataset(samples, builder)
    dataset.bad_images = BadImages("skip", listing)
    row = dataset[grey]
    assert row["source"] == str(records[0].source)  # the next sample, wrapping round
    import json
    listed = [json.loads(line) for line in listing.read_text().splitlines()]
    assert [(e["file"], e["line"], e["stage"]) for e in listed] == [(str(train), bad[1], "training")]
    assert dataset[grey]["source"] == str(records[0].source) and len(listing.read_text().splitlines()) == 1
    dataset.bad_images = BadImages("error", listing)
    with pytest.raises(DataError) as stopped:
        dataset[grey]
    assert f"{train}:{bad[1]}: images[0]: cannot be decoded during training" in str(stopped.value)
    assert "custom.bad_records: skip" in str(stopped.value)


def test_a_resume_keeps_what_training_skipped_when_it_lists_validation_again(tmp_path):
    """The listing was rewritten at every start: a resume lost the lines training had appended."""
    import json

    from src.datasets.contract import Problem
    from src.datasets.loading import LoadedSplit, write_skipped

    listing = tmp_path / "run" / "skipped_records.jsonl"
    split = LoadedSplit(path="train.jsonl", problems=[Problem(file="train.jsonl", line=3, field="width",
                                                              message="must be > 0", value=0)])
    assert write_skipped([split], listing) == listing
    with listing.open("a", encoding="utf-8") as fh:  # as BadImages appends during training
        fh.write(json.dumps({"file": "train.jsonl", "line": 9, "stage": "training", "rank": 0}) + "\n")
        fh.write('{"file": "train.jsonl", "li')  # a line a kill cut short
    assert write_skipped([split], listing) == listing  # the resume validates again
    entries = [json.loads(line) for line in listing.read_text().splitlines()]
    assert [(e["line"], e.get("stage")) for e in entries] == [(3, None), (9, "training")]
    assert write_skipped([LoadedSplit(path="train.jsonl")], listing) == listing  # the data was mended since
    assert [json.loads(line)["line"] for line in listing.read_text().splitlines()] == [9]
    assert write_skipped([LoadedSplit(path="train.jsonl")], tmp_path / "new" / "skipped_records.jsonl") is None


@pytest.mark.slow
def test_training_goes_on_past_a_truncated_image_under_skip(tmp_path, capsys):
    """Issue 21: a truncated JPEG passed the header check and killed the run mid-epoch even with `skip`."""
    import json

    from src.sft import main

    build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=3, val_fraction=0.0)
    train, bad = _with_truncated_images(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: {tmp_path / 'model'}\n"
                      f"custom:\n  train_jsonl: {train}\n  bad_records: skip\n  health_check_samples: 0\n"
                      f"training:\n  output_dir: {tmp_path / 'out'}\n  max_steps: 5\n  save_strategy: 'no'\n"
                      "  eval_strategy: 'no'\n  logging_steps: 1\n  train_dataloader_shuffle: false\n")
    assert main(["--config", str(config), "--device", "cpu"]) == 0, capsys.readouterr().err[-3000:]
    listed = [json.loads(line) for line in (tmp_path / "out" / "skipped_records.jsonl").read_text().splitlines()]
    assert sorted((e["line"], e["stage"]) for e in listed) == [(line, "training") for line in bad]
    err = capsys.readouterr().err
    assert all(f"skipped during training (custom.bad_records: skip): {train}:{line}" in err for line in bad)

    from src.datasets.loading import DataError

    strict = config.read_text().replace("bad_records: skip", "bad_records: error").replace("/out", "/strict")
    config.write_text(strict)
    with pytest.raises(DataError) as stopped:  # src.sft's run_main prints it: exit 2, the message only
        main(["--config", str(config), "--device", "cpu"])
    assert f"{train}:{bad[0]}: images[0]: cannot be decoded during training" in str(stopped.value)
    assert "custom.bad_records: skip" in str(stopped.value)
