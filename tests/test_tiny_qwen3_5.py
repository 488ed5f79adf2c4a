"""The tiny Qwen3.5 (`python -m src.tiny_model --arch qwen3_5`): Gated DeltaNet and full-attention layers, the
vision tower without deepstack, the added tokens at Qwen3.5's ids (248044..; ms-swift's template hard-codes the
image token 248056). It loads in transformers and ms-swift and its template encodes images with those ids.
Every recipe trains it in tests/test_recipes.py, where its stage-2 adapter also answers through `src.infer` and
is scored by `src.eval`. Qwen3.5's own 248k BPE is not available offline: the text between the added tokens
is Qwen's 151,643 ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow


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
