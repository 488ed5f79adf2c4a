"""End to end on CPU with the real ms-swift: the demo (tiny model -> synthetic data -> stage 1 -> stage 2
-> inference) run offline, then the stage-2 adapter through the real `swift infer` and `swift export`
CLIs from another working directory, and the merged model through plain transformers."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from src.training.swift_plugin import VISION_ENV_KEYS
from tests.support.offline import REPO, offline_run

pytestmark = pytest.mark.slow
SWIFT = str(Path(sys.executable).with_name("swift"))
HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # what README tells users of the swift CLI


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    log = out / "network_attempts.log"
    argv = [sys.executable, "-m", "src.demo", "--output", str(out), "--n", "12", "--no-memorise"]
    proc = offline_run(argv, cwd=REPO, log=log)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = sorted((out / "demo").iterdir())
    assert len(runs) == 1
    return {"out": out, "run": runs[0], "log": log, "stdout": proc.stdout}


def test_demo_makes_no_network_attempt(demo):
    assert not demo["log"].exists(), demo["log"].read_text()


def test_demo_prints_where_each_output_is(demo):
    for label in ("tiny model:", "stage 1 checkpoint:", "stage 2 adapter:", "predictions:", "metrics:", "pictures:"):
        assert label in demo["stdout"]
    assert str(demo["run"] / "stage2_predictions.jsonl") in demo["stdout"]
    assert (demo["run"] / "stage2_metrics.json").is_file()
    assert (demo["run"] / "stage2_vis" / "index.html").is_file()
    assert list((demo["run"] / "stage2").glob("loss_curves.png"))


def test_stage1_trains_the_aligner_into_a_full_checkpoint(demo):
    ckpt = (demo["run"] / "stage1" / "last-checkpoint").resolve()
    assert (ckpt / "model.safetensors").is_file()
    assert (demo["run"] / "stage1" / "resolved_config.yaml").is_file()


def test_stage2_saves_only_the_adapter_and_the_aligner(demo):
    ckpt = (demo["run"] / "stage2" / "last-checkpoint").resolve()
    assert (ckpt / "adapter_model.safetensors").is_file()
    assert not list(ckpt.glob("model*.safetensors")), "a LoRA run must not write the full model"
    with safe_open(str(ckpt / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    lora = [k for k in keys if "lora_" in k]
    full = [k for k in keys if "lora_" not in k]
    assert lora and all(".language_model." in k for k in lora)  # LoRA on the LLM only
    assert full and all(".visual.merger." in k or ".visual.deepstack_merger_list." in k for k in full), full[:5]


def test_checkpoint_args_hold_absolute_paths(demo):
    args = json.loads(((demo["run"] / "stage2" / "last-checkpoint") / "args.json").read_text())
    assert Path(args["model"]).is_absolute() and Path(args["model"]).is_dir()
    assert Path(args["output_dir"]).is_absolute()
    assert all(Path(p).is_absolute() for p in args["dataset"])


def test_predictions_cover_the_validation_split(demo):
    val_lines = [x for x in (demo["out"] / "demo-assets" / "data" / "val.jsonl").read_text().splitlines() if x]
    preds = [json.loads(x) for x in (demo["run"] / "stage2_predictions.jsonl").read_text().splitlines()]
    assert len(preds) == len(val_lines)
    for pred in preds:
        assert {"source", "raw", "objects", "parse_error", "width", "height"} <= set(pred)


@pytest.fixture(scope="module")
def photo_infer(demo, tmp_path_factory):
    """`swift infer --adapters` on the stage-2 checkpoint, from another directory, over rows that
    `python -m src.datasets rows` wrote for a 1600x1200 photo, with no image variable in the environment."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photo")
    photo = root / "photo.jpg"
    Image.new("RGB", (1600, 1200), (90, 120, 30)).save(photo)
    records = root / "records.jsonl"
    records.write_text(json.dumps({"images": [str(photo)], "width": 1600, "height": 1200,
                                   "objects": [{"bbox_2d": [100, 100, 900, 700], "desc": "field"}]}) + "\n")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    log = root / "attempts.log"
    made = offline_run([sys.executable, "-m", "src.datasets", "rows", "--config",
                        str(demo["run"] / "stage2" / "resolved_config.yaml"), "--jsonl", str(records), "--out",
                        "rows.jsonl"], cwd=elsewhere, log=log)
    assert made.returncode == 0, made.stderr[-3000:]
    ckpt = (demo["run"] / "stage2" / "last-checkpoint").resolve()
    infer = offline_run([SWIFT, "infer", "--adapters", str(ckpt), "--val_dataset", "rows.jsonl", "--max_new_tokens",
                         "4", "--result_path", "result.jsonl", "--infer_backend", "transformers"],
                        cwd=elsewhere, log=log, extra_env=HUB_OFFLINE, unset=VISION_ENV_KEYS)
    assert infer.returncode == 0, infer.stderr[-3000:]
    return {"elsewhere": elsewhere, "log": log, "stdout": infer.stdout}


def test_swift_infer_and_export_accept_the_adapter_from_another_directory(demo, photo_infer, tmp_path):
    ckpt = (demo["run"] / "stage2" / "last-checkpoint").resolve()
    elsewhere, log = photo_infer["elsewhere"], photo_infer["log"]
    assert json.loads((elsewhere / "result.jsonl").read_text().splitlines()[0])["response"] is not None

    merged = elsewhere / "merged"
    export = offline_run([SWIFT, "export", "--adapters", str(ckpt), "--merge_lora", "true", "--output_dir", "merged"],
                         cwd=elsewhere, log=log, extra_env=HUB_OFFLINE)
    assert export.returncode == 0, export.stderr[-3000:]
    assert (merged / "model.safetensors").is_file()
    # `swift infer --model merged/` reads args.json there too: the image budget travels with the merge.
    assert json.loads((merged / "args.json").read_text())["external_plugins"] == [
        str(_plugin_of(demo["run"] / "stage2"))]

    load = offline_run([sys.executable, "-c", (
        "import sys; from transformers import AutoProcessor, Qwen3VLForConditionalGeneration as M;"
        "m = M.from_pretrained(sys.argv[1]); p = AutoProcessor.from_pretrained(sys.argv[1]);"
        "ids = p.tokenizer('hello', return_tensors='pt').input_ids;"
        "out = m.generate(ids, max_new_tokens=3, do_sample=False); print('generated', out.shape[1] - ids.shape[1])"),
        str(merged)], cwd=elsewhere, log=log, extra_env=HUB_OFFLINE)
    assert load.returncode == 0, load.stderr[-3000:]
    assert "generated 3" in load.stdout
    assert not log.exists(), log.read_text()


def _prompt_tokens(stdout: str) -> int:
    """`num_prompt_tokens` from the stats line `swift infer` prints at the end."""
    found = re.findall(r"'num_prompt_tokens': (\d+)", stdout)
    assert found, stdout[-2000:]
    return int(found[-1])


def _plugin_of(run: Path) -> Path:
    """The run's one image-budget plugin (src/training/swift_plugin.py), absolute."""
    (plugin,) = run.resolve().glob("swift_plugin_*.py")
    return plugin


def _tokens_at(height: int, width: int, max_tokens: int) -> int:
    """Image tokens Qwen3-VL gives an image under a budget (qwen_vl_utils' resize, pixel factor 32)."""
    from qwen_vl_utils.vision_process import smart_resize

    h, w = smart_resize(height, width, factor=32, min_pixels=4 * 32 * 32, max_pixels=max_tokens * 32 * 32)
    return h * w // (32 * 32)


def test_swift_infer_sees_a_large_image_at_the_training_budget(demo, photo_infer, tmp_path):
    """The stage-2 checkpoint alone (its args.json) makes `swift infer` read a 1600x1200 photo at the
    training's image budget (configs/cpu.yaml: 64 tokens), not ms-swift's default (16,384)."""
    run = demo["run"] / "stage2"
    ckpt = (run / "last-checkpoint").resolve()
    args = json.loads((ckpt / "args.json").read_text())
    assert args["external_plugins"] == [str(_plugin_of(run))]
    assert args["system"] == "You are a helpful assistant."
    as_trained = _prompt_tokens(photo_infer["stdout"])

    # The same checkpoint without the plugin in its args.json: what ms-swift alone would do.
    bare = tmp_path / "bare-checkpoint"
    shutil.copytree(ckpt, bare)
    (bare / "args.json").write_text(json.dumps({**args, "external_plugins": []}))
    proc = offline_run([SWIFT, "infer", "--adapters", str(bare), "--val_dataset", "rows.jsonl", "--max_new_tokens",
                        "1", "--infer_backend", "transformers"], cwd=photo_infer["elsewhere"], log=photo_infer["log"],
                       extra_env=HUB_OFFLINE, unset=VISION_ENV_KEYS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    at_default = _prompt_tokens(proc.stdout)

    # Moved on its own (args.json's plugin path gone, where ms-swift would stop): the checkpoint's own copy
    # of the plugin, named on the command line, gives the training's budget again.
    moved, plugin = tmp_path / "moved-checkpoint", _plugin_of(run)
    shutil.copytree(ckpt, moved)
    (moved / "args.json").write_text(json.dumps({**args, "external_plugins": [f"/gone/run/{plugin.name}"]}))
    assert (moved / plugin.name).read_bytes() == plugin.read_bytes()
    proc = offline_run([SWIFT, "infer", "--adapters", str(moved), "--external_plugins", str(moved / plugin.name),
                        "--val_dataset", "rows.jsonl", "--max_new_tokens", "1", "--infer_backend", "transformers"],
                       cwd=photo_infer["elsewhere"], log=photo_infer["log"], extra_env=HUB_OFFLINE,
                       unset=VISION_ENV_KEYS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _prompt_tokens(proc.stdout) == as_trained

    assert _tokens_at(1200, 1600, 64) == 54 and _tokens_at(1200, 1600, 16384) == 1900
    assert at_default - as_trained == 1900 - 54
    assert not photo_infer["log"].exists(), photo_infer["log"].read_text()
