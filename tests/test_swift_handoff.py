"""What the model sees reaches ms-swift's own CLI: the image budget plugin a run writes for its checkpoints,
the rows `python -m src.datasets rows` writes for `swift infer`, and turned photos sent upright at inference.
(The end-to-end check through the real `swift infer` is in tests/test_demo_e2e.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from src.config.prompts import get_prompt_scheme
from src.datasets.__main__ import main as datasets_main
from src.datasets.builders import make_builder
from src.datasets.contract import GroundingObject, Record, SourceRef
from src.training.swift_plugin import (
    copy_into_checkpoint,
    plugin_path,
    plugin_source,
    vision_settings,
    with_plugin,
    write_plugin,
)

BUILDER = make_builder(get_prompt_scheme("dense"), emit_norm="norm1000", object_order="reading")


def _run_plugin(tmp_path: Path, settings: dict, env: dict) -> subprocess.CompletedProcess:
    plugin = write_plugin(tmp_path, settings)
    code = ("import importlib.util, os, sys, warnings; warnings.simplefilter('always');"
            "spec = importlib.util.spec_from_file_location('p', sys.argv[1]);"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec));"
            "print(os.environ.get('IMAGE_MAX_TOKEN_NUM'), os.environ.get('IMAGE_MIN_TOKEN_NUM'))")
    clean = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, "-c", code, str(plugin)], env=clean, capture_output=True, text=True)


def test_the_plugin_sets_the_training_budget_where_the_environment_is_silent(tmp_path):
    proc = _run_plugin(tmp_path, {"IMAGE_MAX_TOKEN_NUM": "1024", "IMAGE_MIN_TOKEN_NUM": "16"}, {})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1024", "16"]
    assert "trained with" not in proc.stderr


def test_an_explicit_variable_at_inference_wins_and_is_reported(tmp_path):
    proc = _run_plugin(tmp_path, {"IMAGE_MAX_TOKEN_NUM": "1024"}, {"IMAGE_MAX_TOKEN_NUM": "4096"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["4096", "None"]
    assert "IMAGE_MAX_TOKEN_NUM=4096 from the environment; the model was trained with IMAGE_MAX_TOKEN_NUM=1024" \
        in proc.stderr


def test_vision_settings_pick_only_the_variables_that_decide_what_the_model_sees():
    environ = {"IMAGE_MAX_TOKEN_NUM": "64", "MAX_PIXELS": "50176", "OMP_NUM_THREADS": "1", "IMAGE_MIN_TOKEN_NUM": ""}
    assert vision_settings(environ) == {"IMAGE_MAX_TOKEN_NUM": "64", "MAX_PIXELS": "50176"}
    assert "TRAINED_WITH = {}" in plugin_source({})  # nothing set: ms-swift's defaults, as at training


def test_the_plugin_joins_the_plugins_a_config_already_names(tmp_path):
    budget = {"IMAGE_MAX_TOKEN_NUM": "64"}
    kwargs = {"output_dir": str(tmp_path / "run"), "external_plugins": ["/opt/mine.py"]}
    plugins = with_plugin(kwargs, budget)["external_plugins"]
    assert plugins == ["/opt/mine.py", str(plugin_path(tmp_path / "run", budget))]
    assert Path(plugins[1]).is_absolute()
    assert with_plugin({**kwargs, "external_plugins": plugins}, budget)["external_plugins"] == plugins  # not twice
    # a resumed run's arguments name its earlier plugin: the budget of this run replaces it
    other = with_plugin({**kwargs, "external_plugins": plugins}, {"IMAGE_MAX_TOKEN_NUM": "128"})["external_plugins"]
    assert other[0] == "/opt/mine.py" and len(other) == 2 and other[1] != plugins[1]
    (relative,) = with_plugin({"output_dir": "rel/run"}, {})["external_plugins"]
    assert Path(relative).parent == Path.cwd() / "rel/run"


def test_a_plugin_file_is_never_rewritten_so_earlier_checkpoints_keep_their_budget(tmp_path):
    """A run resumed with another image budget writes a second file; the first, which the earlier
    checkpoints' args.json name, still sets the budget they were trained at."""
    first = write_plugin(tmp_path, {"IMAGE_MAX_TOKEN_NUM": "64"})
    assert write_plugin(tmp_path, {"IMAGE_MAX_TOKEN_NUM": "64"}) == first
    second = write_plugin(tmp_path, {"IMAGE_MAX_TOKEN_NUM": "1024"})
    assert second != first and second.parent == first.parent
    assert '"IMAGE_MAX_TOKEN_NUM": "64"' in first.read_text() and '"IMAGE_MAX_TOKEN_NUM": "1024"' in second.read_text()


def test_each_checkpoint_gets_a_copy_of_the_projects_plugin_only(tmp_path):
    (tmp_path / "run").mkdir()
    plugin = write_plugin(tmp_path / "run", {"IMAGE_MAX_TOKEN_NUM": "64"})
    mine = tmp_path / "mine.py"
    mine.write_text("# a config's own plugin\n")
    checkpoint = tmp_path / "run" / "checkpoint-2"
    checkpoint.mkdir()
    copies = copy_into_checkpoint(checkpoint, [str(mine), str(plugin)])
    assert copies == [checkpoint / plugin.name] and copies[0].read_bytes() == plugin.read_bytes()
    assert sorted(p.name for p in checkpoint.iterdir()) == [plugin.name]  # the config's own stays where it is


def _turned_photo(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, displayed 20x40
    Image.new("RGB", (40, 20), (250, 0, 0)).save(path, exif=exif.tobytes())
    return path


def test_rows_ask_what_training_asks_with_turned_photos_written_upright(tree, tmp_path):
    t = tree()
    photo = _turned_photo(tmp_path / "photo.jpg")
    records = tmp_path / "records.jsonl"
    plain = json.loads(t.val_jsonl.read_text().splitlines()[0])
    turned = {"images": [str(photo)], "width": 20, "height": 40,
              "objects": [{"bbox_2d": [2, 4, 10, 30], "desc": "rotkehlchen 赤"}]}
    records.write_text(json.dumps(turned, ensure_ascii=False) + "\n")
    out = tmp_path / "rows" / "rows.jsonl"
    out.parent.mkdir()
    assert datasets_main(["rows", "--config", str(t.config), "--jsonl", str(records), "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert set(row) == {"messages", "images"}
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][1]["content"].startswith("<image>")
    answer = json.loads(row["messages"][2]["content"])
    assert answer == [{"bbox_2d": [100, 100, 500, 750], "label": "rotkehlchen 赤"}]  # 0..1000 of 20x40
    (image,) = row["images"]
    assert Path(image).is_absolute() and Path(image).parent == out.parent / "rows_images"
    assert Image.open(image).size == (20, 40)

    again = ["rows", "--config", str(t.config), "--out", str(out)]
    assert datasets_main(again) == 2  # never overwrites
    out.unlink()
    assert datasets_main(again) == 2  # nor the upright copies of earlier rows
    assert datasets_main([*again, "--overwrite"]) == 0  # the config's records: plain images, no copy needed
    assert list((out.parent / "rows_images").iterdir()) == []  # the earlier copy, which no row names, is gone
    asked = tmp_path / "asked.jsonl"
    assert datasets_main(["rows", "--config", str(t.config), "--no-answer", "--out", str(asked)]) == 0
    lines = [json.loads(line) for line in asked.read_text().splitlines()]
    assert len(lines) == len(t.val_jsonl.read_text().splitlines())
    assert [m["role"] for m in lines[0]["messages"]] == ["system", "user"]
    assert lines[0]["images"] == [str((t.val_jsonl.parent / plain["images"][0]).resolve())]  # plain: as is


def test_rows_without_records_is_an_error_naming_the_key(tree, capsys):
    t = tree({"custom": {"val_jsonl": None}})
    assert datasets_main(["rows", "--config", str(t.config), "--out", str(t.root / "r.jsonl")]) == 2
    assert "custom.val_jsonl" in capsys.readouterr().err
    assert not (t.root / "r.jsonl").exists()


@pytest.mark.parametrize("orientation", [1, 6])
def test_inference_sends_a_turned_photo_upright(tmp_path, orientation):
    from src.inference.engine import as_seen, questions

    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", (40, 20), (250, 0, 0)).save(path, exif=exif.tobytes())
    width, height = (20, 40) if orientation == 6 else (40, 20)
    record = Record(image=str(path), width=width, height=height, summary=None,
                    objects=(GroundingObject(kind="bbox_2d", points=(1, 1, 10, 10), desc="x"),),
                    source=SourceRef(file=str(tmp_path / "a.jsonl"), line=1))
    _, (request,) = questions([record], BUILDER)
    assert request.images == [str(path)]  # by path until the engine is about to answer it
    (image,) = as_seen(request).images
    if orientation == 1:
        assert image == str(path)  # plain: handed on as its path
    else:
        assert isinstance(image, Image.Image) and image.size == (20, 40)
