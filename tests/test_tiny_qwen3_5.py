"""The tiny Qwen3.5 (`python -m src.tiny_model --arch qwen3_5`): Gated DeltaNet and full-attention layers, the
vision tower without deepstack, the added tokens at Qwen3.5's ids (248044..; ms-swift's template hard-codes the
image token 248056). It loads in transformers and ms-swift, the stage-2 recipe trains it through the real
pipeline on CPU (LoRA on every linear of the language model, both layer kinds), and its adapter answers through
`src.infer` and is scored by `src.eval`. Qwen3.5's own 248k BPE is not available offline: the text between the
added tokens is Qwen's 151,643 ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def q35_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("q35") / "model", arch="qwen3_5")


def test_qwen3_5_encodes_images_with_its_own_token_ids(q35_dir):
    from PIL import Image
    from swift import get_processor, get_template

    config = json.loads((q35_dir / "config.json").read_text())
    assert (config["model_type"], config["image_token_id"], config["text_config"]["vocab_size"]) == \
        ("qwen3_5", 248056, 248320)
    assert config["text_config"]["layer_types"] == ["linear_attention", "full_attention"]
    processor = get_processor(str(q35_dir), model_type="qwen3_5")
    tokenizer = processor.tokenizer
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                                          "<|image_pad|>", "<think>")] == \
        [248044, 248045, 248046, 248056, 248068]
    assert tokenizer.encode("Hello world") == [9707, 1879]  # Qwen's ranks below the added tokens
    template = get_template(processor, template_type="qwen3_5")
    template.set_mode("train")
    encoded = template.encode({"messages": [{"role": "user", "content": "<image>Where?"},
                                            {"role": "assistant", "content": "[]"}],
                               "images": [Image.new("RGB", (128, 96))]})
    assert encoded["input_ids"].count(248056) == 12  # 128x96 at 32 px per token
    assert "<think>\n\n</think>\n\n[]" in tokenizer.decode(encoded["input_ids"])  # the template's thinking turn


def test_the_stage_2_recipe_trains_qwen3_5_and_its_adapter_answers(q35_dir, tmp_path):
    from src.datasets.synth import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n=6, val_fraction=0.0)
    config = tmp_path / "q35.yaml"
    config.write_text(json.dumps({
        "extends": [str(REPO / "configs" / "stage_2_llm_lora.yaml"), str(REPO / "configs" / "cpu.yaml")],
        "model": {"model": str(q35_dir), "model_type": "qwen3_5"}, "template": {"template": "qwen3_5"},
        "custom": {"train_jsonl": str(tmp_path / "data" / "train.jsonl"), "health_check_samples": 2},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "eval_strategy": "no",
                     "save_strategy": "steps", "save_steps": 2, "logging_steps": 1}}))
    proc = subprocess.run([sys.executable, "-m", "src.sft", "--config", str(config)], cwd=REPO, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "health check: the first 2 samples encode as built" in proc.stdout
    checkpoint = tmp_path / "run" / "checkpoint-2"
    with safe_open(str(checkpoint / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    lora = [k for k in keys if ".lora_" in k]
    assert any(".linear_attn.in_proj_qkv." in k for k in lora) and any(".self_attn.q_proj." in k for k in lora)
    assert any(".mlp.down_proj." in k for k in lora) and all(".language_model." in k for k in lora)
    full = [k for k in keys if ".lora_" not in k]
    assert full and all(".visual.merger." in k for k in full), full  # the aligner, in full

    predictions, metrics = tmp_path / "pred.jsonl", tmp_path / "metrics.json"
    for argv in (["-m", "src.infer", "--config", str(config), "--checkpoint", str(checkpoint), "--jsonl",
                  str(tmp_path / "data" / "train.jsonl"), "--limit", "2", "--max_new_tokens", "16", "--out",
                  str(predictions)],
                 ["-m", "src.eval", "--pred", str(predictions), "--gt", str(tmp_path / "data" / "train.jsonl"),
                  "--out", str(metrics)]):
        step = subprocess.run([sys.executable, *argv], cwd=REPO, text=True, capture_output=True, timeout=600)
        assert step.returncode == 0, step.stdout[-3000:] + step.stderr[-3000:]
    assert len(predictions.read_text().splitlines()) == 2
    assert json.loads(metrics.read_text())["n_pred_rows"] == 2
