"""What the data commands write beside their `--out` (`rows`' and `render`'s `<out stem>_images/`, `render`'s
records, `cache`'s folder) against what they read and what was there before: nothing they read is replaced
or deleted, and `--overwrite` removes only what the command itself wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from src.cli import EXIT_OK, EXIT_USAGE
from src.datasets.__main__ import main as datasets_main

REPO = Path(__file__).resolve().parents[1]


def _records_with_images_in(t, folder: Path, out: Path) -> Path:
    """The training records of `t` rewritten to `out`, their images copied into `folder` (as `render` leaves
    them: `<stem>_images/000000_0.png`, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, line in enumerate(t.train_jsonl.read_text().splitlines()):
        record = json.loads(line)
        image = folder / f"{i:06d}_0.png"
        shutil.copy(t.train_jsonl.parent / record["images"][0], image)
        lines.append(json.dumps({**record, "images": [str(image)]}))
    out.write_text("\n".join(lines) + "\n")
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _turned_photo(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, displayed 20x40: `rows` writes it upright beside the rows
    Image.new("RGB", (40, 20), (250, 0, 0)).save(path, exif=exif.tobytes())
    return path


def test_rows_never_writes_into_the_folder_of_its_own_input_images(tree, capsys):
    """`rows --jsonl r/render.records.jsonl --out r/render.jsonl --overwrite` deleted every image of the records
    it was about to read (r/render_images/*.png) and then crashed on the first of them (exit 3)."""
    t = tree()
    images = t.root / "r" / "render_images"
    records = _records_with_images_in(t, images, t.root / "r" / "render.records.jsonl")
    out = t.root / "r" / "render.jsonl"
    out.write_text("render's samples\n")
    before = _snapshot(images)
    assert datasets_main(["rows", "--config", str(t.config), "--jsonl", str(records), "--out", str(out),
                          "--overwrite"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{images} holds the image {images / '000000_0.png'} of the input record {records}:1" in err
    assert "Traceback" not in err
    assert _snapshot(images) == before and out.read_text() == "render's samples\n"  # nothing deleted or written


def test_rows_overwrite_removes_only_the_copies_rows_wrote(tree, tmp_path):
    """`--overwrite` deleted every *.png of `<out stem>_images/`; now only the upright copies an earlier `rows`
    wrote (and listed there) go, and a new copy never takes the name of a file that is not its own."""
    t = tree()
    photo = _turned_photo(tmp_path / "photo.jpg")
    turned = tmp_path / "turned.jsonl"
    turned.write_text(json.dumps({"images": [str(photo)], "width": 20, "height": 40,
                                  "objects": [{"bbox_2d": [2, 4, 10, 30], "desc": "robin"}]}) + "\n")
    out = tmp_path / "rows" / "rows.jsonl"
    images = out.parent / "rows_images"
    images.mkdir(parents=True)
    theirs = {"000000_0.png": b"render's image", "000000_photo.png": b"the user's file", "notes.txt": b"mine"}
    for name, data in theirs.items():
        (images / name).write_bytes(data)

    rows = ["rows", "--config", str(t.config), "--jsonl", str(turned), "--out", str(out), "--overwrite"]
    assert datasets_main(rows) == EXIT_OK
    (first,) = json.loads(out.read_text())["images"]
    assert Path(first) == images / "000000_photo-1.png"  # the user's 000000_photo.png is not written over
    assert Image.open(first).size == (20, 40)
    assert (images / ".rows_written").read_text() == "000000_photo-1.png\n"  # swift_rows.WRITTEN: its copies

    out.unlink()  # the earlier rows gone too: the listing still says which copies are rows'
    plain = ["rows", "--config", str(t.config), "--out", str(out), "--overwrite"]  # the config's plain images
    assert datasets_main(plain) == EXIT_OK
    assert _snapshot(images) == theirs  # its copy and listing removed, every other file as it was


def test_render_refuses_its_existing_side_outputs_and_its_inputs_among_them(tree, capsys):
    """`render` checked only `--out`: an existing `<stem>.records.jsonl` or `<stem>_images/` was written over
    without `--overwrite`, the config's own records file or images among them too."""
    t = tree()
    r = t.root / "r"
    records = r / "render.records.jsonl"
    records.parent.mkdir()
    records.write_text("an earlier render's records\n")
    render = ["render", "--config", str(t.config), "--out", str(r / "render.jsonl")]
    assert datasets_main(render) == EXIT_USAGE  # --out is new, its records file is not
    assert f"render records {records}: the file exists; choose another path or pass --overwrite" in \
        capsys.readouterr().err
    records.unlink()
    (r / "render_images").mkdir()
    (r / "render_images" / "000000_0.png").write_bytes(b"an earlier render's image")
    assert datasets_main(render) == EXIT_USAGE
    assert f"render images {r / 'render_images'}: the folder is not empty" in capsys.readouterr().err
    assert (r / "render_images" / "000000_0.png").read_bytes() == b"an earlier render's image"

    # The config trains on an earlier render's records: neither they nor their images are written over.
    _records_with_images_in(t, r / "render_images", records)
    on_render = tree(f"custom:\n  train_jsonl: {records}\n")
    before = records.read_bytes(), _snapshot(r / "render_images")
    again = ["render", "--config", str(on_render.config), "--out", str(r / "render.jsonl"), "--overwrite"]
    assert datasets_main(again) == EXIT_USAGE
    assert f"render records {records} is also the input custom.train_jsonl" in capsys.readouterr().err
    elsewhere = t.root / "elsewhere.jsonl"
    shutil.copy(records, elsewhere)
    on_images = tree(f"custom:\n  train_jsonl: {elsewhere}\n")
    again = ["render", "--config", str(on_images.config), "--out", str(r / "render.jsonl"), "--overwrite"]
    assert datasets_main(again) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"render images {r / 'render_images'} holds the image {r / 'render_images' / '000000_0.png'}" in err
    assert f"of the input record {elsewhere}:1" in err
    assert (records.read_bytes(), _snapshot(r / "render_images")) == before
    assert not (r / "render.jsonl").exists()


@pytest.mark.slow  # two cache builds through ms-swift's template on the tiny model (about 40 s on 2 cores)
def test_a_rebuilt_cache_is_only_the_new_one(tmp_path, capsys):
    """`cache --overwrite` wrote into the earlier cache: a val/ of the earlier one stayed when the new config has
    no validation split, and a later run trained with it (`cached_val_dataset`)."""
    from src.config import load_project_config
    from src.config.mapping import to_sft_kwargs
    from src.datasets.cache import CACHE_INFO
    from src.datasets.synth import write_synthetic_dataset
    from src.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "model")
    write_synthetic_dataset(tmp_path / "data", n=6)
    with_val = tmp_path / "with_val.yaml"
    with_val.write_text(f"extends: {REPO / 'configs' / 'cpu.yaml'}\nmodel:\n  model: ./model\n"
                        "custom:\n  train_jsonl: data/train.jsonl\n  val_jsonl: data/val.jsonl\n"
                        "training:\n  output_dir: ./out\n")
    cache = tmp_path / "cache"
    assert datasets_main(["cache", "--config", str(with_val), "--out", str(cache)]) == EXIT_OK
    assert (cache / "val").is_dir()
    (cache / "notes.txt").write_text("the user's")  # not the cache's: stays
    without_val = tmp_path / "without_val.yaml"
    without_val.write_text("extends: with_val.yaml\ncustom:\n  val_jsonl: null\n")
    assert datasets_main(["cache", "--config", str(without_val), "--out", str(cache), "--overwrite"]) == EXIT_OK
    assert "cached 5 train and 0 val rows" in capsys.readouterr().out  # synth: 6 images, 1 of them for val
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_INFO, "notes.txt", "train"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # the build folder is gone
    run = tmp_path / "run.yaml"
    run.write_text("extends: without_val.yaml\ncustom:\n  cached_dataset: ./cache\n")
    kwargs = to_sft_kwargs(load_project_config(run))
    assert kwargs["cached_dataset"] == [str(cache / "train")] and kwargs["cached_val_dataset"] == []


def test_cache_never_replaces_a_train_or_val_folder_that_is_not_a_cache(tree, capsys):
    """A rebuild replaces the cache's own train/ and val/ (saved datasets) whole: a user's folder of that name in
    `--out`, or `--out` a file, is refused before anything is encoded."""
    t = tree()
    out = t.root / "project"
    (out / "val").mkdir(parents=True)
    (out / "val" / "mine.txt").write_text("a folder of the user's named val")
    cache = ["cache", "--config", str(t.config), "--overwrite", "--out"]
    assert datasets_main([*cache, str(out)]) == EXIT_USAGE
    assert f"{out / 'val'}: not a cache's (no saved dataset there)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["val"] and (out / "val" / "mine.txt").is_file()
    assert datasets_main([*cache, str(out / "val" / "mine.txt")]) == EXIT_USAGE
    assert f"{out / 'val' / 'mine.txt'}: not a cache's" in capsys.readouterr().err
