"""Tests for src/tiny_model.py: the offline tiny Qwen3-VL fixture (real transformers and ms-swift)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from src.config.offline import apply_offline_env

apply_offline_env()  # before transformers/huggingface_hub are imported: they read these at import time

import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoProcessor,
    AutoTokenizer,
    Qwen3VLForConditionalGeneration,
)

from src.tiny_model import BUILDER_VERSION, build_tiny_model, main
from src.tiny_model.tokenizer import QWEN_ADDED_TOKENS

GROUNDING_ANSWER = '[{"bbox_2d": [12, 34, 56, 78], "label": "red circle"}, {"bbox_2d": [5, 0, 999, 1000], "label": "x"}]'


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _image(width: int = 128, height: int = 96) -> Image.Image:
    img = Image.new("RGB", (width, height), (255, 255, 255))
    img.paste((220, 30, 30), (20, 20, 60, 60))
    return img


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen3vl", seed=0)


@pytest.fixture(scope="module")
def processor(model_dir: Path):
    return AutoProcessor.from_pretrained(model_dir)


def test_layout_and_marker(model_dir: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
        "tiny_model.json",
    } <= names
    assert json.loads((model_dir / "tiny_model.json").read_text()) == {
        "builder": "src.tiny_model",
        "builder_version": BUILDER_VERSION,
        "seed": 0,
    }
    assert (model_dir / "model.safetensors").stat().st_size < 25_000_000


def test_config_ids_match_tokenizer(model_dir: Path) -> None:
    config = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert config.model_type == "qwen3_vl"
    assert config.text_config.vocab_size == 151936
    assert config.dtype == torch.bfloat16
    assert config.text_config.rope_parameters["mrope_section"] == [4, 2, 2]
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>") == 151656
    assert (
        config.vision_start_token_id
        == tok.convert_tokens_to_ids("<|vision_start|>")
        == 151652
    )
    assert (
        config.vision_end_token_id
        == tok.convert_tokens_to_ids("<|vision_end|>")
        == 151653
    )


def test_special_tokens_at_real_ids(model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert len(QWEN_ADDED_TOKENS) == 26
    for token_id, content, _special in QWEN_ADDED_TOKENS:
        assert tok.convert_tokens_to_ids(content) == token_id, content
        assert tok.encode(content) == [token_id], content  # atomic, never split
    assert len(tok) == 151669  # same as the real Qwen3-VL tokenizer
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert tok.bos_token is None


def test_tokenizer_round_trips_json_and_text(model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    for text in (
        GROUNDING_ANSWER,
        "Find all objects. 你好 ü 😀\n\ttabs  and spaces",
        "[]",
    ):
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("12345")
    assert len(ids) == 5  # Qwen2 pre-tokenizer: one token per digit
    with_eos = tok.encode(GROUNDING_ANSWER + "<|im_end|>")
    assert with_eos[-1] == 151645
    assert tok.decode(with_eos, skip_special_tokens=True) == GROUNDING_ANSWER


def _tiktoken_bpe(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's own algorithm, written out: merge the adjacent pair whose concatenation ranks lowest."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        pairs = [(ranks.get(parts[i] + parts[i + 1], float("inf")), i) for i in range(len(parts) - 1)]
        rank, i = min(pairs)
        if rank == float("inf"):
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[part] for part in parts]


QWEN_TEXTS = (GROUNDING_ANSWER, '[{"quad": [10, 20, 30, 20, 30, 40, 10, 40], "label": "text: 出口 ✓"}]',
              "Locate every object in the image.", "größer Hund, 标签, sign ✓ 😀", "  two  spaces\n\nand lines\r\n")


def test_the_tokenizer_gives_qwens_ids(model_dir: Path) -> None:
    """The ids the real Qwen3-VL tokenizer gives: the ones the issue checked against it, the single printable
    ASCII bytes at ranks 0..93 (Qwen's vocabulary starts with them, "!" first), and for any text what
    tiktoken's algorithm gives with Qwen's ranks after Qwen2's pre-tokenizer."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from src.tiny_model.tokenizer import qwen_tiktoken_path, read_tiktoken

    tok = AutoTokenizer.from_pretrained(model_dir)
    known = {"user": [872], "assistant": [77091], "system": [8948], "\n": [198], "Hello": [9707], " world": [1879]}
    assert {text: tok.encode(text) for text in known} == known
    assert all(tok.encode(chr(c)) == [c - 33] for c in range(33, 127))
    assert tok.encode("<|im_start|>user\n") == [151644, 872, 198]
    ranks = read_tiktoken(qwen_tiktoken_path())
    assert len(ranks) == 151643 and len(tok) == 151669
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    for text in QWEN_TEXTS:
        pieces = [bytes(to_byte[c] for c in piece) for piece, _ in
                  tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
        assert tok.encode(text) == [i for piece in pieces for i in _tiktoken_bpe(piece, ranks)], text
        assert tok.decode(tok.encode(text)) == text


def test_chat_template(processor) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "find objects"}],
        },
        {"role": "assistant", "content": "[]"},
        {"role": "user", "content": "again"},
    ]
    text = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>find objects<|im_end|>\n"
        "<|im_start|>assistant\n[]<|im_end|>\n"
        "<|im_start|>user\nagain<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Qwen3-VL-Instruct adds no default system prompt (Qwen2.5-VL did).
    no_prompt = processor.apply_chat_template(
        messages[3:], add_generation_prompt=False, tokenize=False
    )
    assert no_prompt == "<|im_start|>user\nagain<|im_end|>\n"


def test_processor_image_tokens_match_grid(processor) -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "find objects"}],
        }
    ]
    text = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    inputs = processor(text=[text], images=[_image(128, 96)], return_tensors="pt")
    grid = inputs["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 8]]  # 96/16 x 128/16 patches
    n_pads = int((inputs["input_ids"] == 151655).sum())
    assert n_pads == int(grid.prod()) // 4 == 12
    assert inputs["pixel_values"].shape == (48, 3 * 2 * 16 * 16)


def test_transformers_forward_and_generate(model_dir: Path, processor) -> None:
    model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir)
    assert model.dtype == torch.bfloat16
    assert (
        model.lm_head.weight.data_ptr()
        == model.model.language_model.embed_tokens.weight.data_ptr()
    )
    assert 5e6 < sum(p.numel() for p in model.parameters()) < 15e6
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "find objects"}],
        }
    ]
    text = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    inputs = processor(text=[text], images=[_image()], return_tensors="pt")
    seq = inputs["input_ids"].shape[1]
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, seq, 151936)
    assert torch.isfinite(logits.float()).all()
    generated = model.generate(**inputs, max_new_tokens=3)
    assert generated.shape[0] == 1 and seq < generated.shape[1] <= seq + 3


def test_ms_swift_loads_and_encodes(model_dir: Path) -> None:
    from swift import get_model_processor, get_template

    model, processor = get_model_processor(
        str(model_dir), model_type="qwen3_vl", device_map="cpu"
    )
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert model.dtype == torch.bfloat16  # ms-swift read the dtype from config.json
    # ms-swift 4 signature: get_template(processor, ..., template_type=...).
    template = get_template(processor, template_type="qwen3_vl")
    template.set_mode("train")
    row = {
        "messages": [
            {"role": "user", "content": "<image>find objects"},
            {"role": "assistant", "content": "[]"},
        ],
        "images": [_image()],
    }
    encoded = template.encode(row)
    input_ids, labels = encoded["input_ids"], encoded["labels"]
    assert len(input_ids) == len(labels)
    n_pads = input_ids.count(151655)
    assert n_pads == int(encoded["image_grid_thw"].prod()) // 4 > 0
    assert input_ids.count(151652) == input_ids.count(151653) == 1
    trained = [t for t in labels if t != -100]
    assert processor.tokenizer.decode(trained) == "[]<|im_end|>\n"
    assert all(lab == -100 for tok, lab in zip(input_ids, labels, strict=True) if tok == 151655)


def test_same_seed_same_bytes_other_seed_differs(
    model_dir: Path, tmp_path: Path
) -> None:
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    reference = _sha256(model_dir / "model.safetensors")
    assert _sha256(again / "model.safetensors") == reference
    assert _sha256(other / "model.safetensors") != reference
    assert _sha256(again / "tokenizer.json") == _sha256(model_dir / "tokenizer.json")


def test_refuses_non_empty_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "busy dir"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    assert main(["--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "--overwrite" in err
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_overwrite_replaces_build_keeps_foreign_files(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    # A stale file from an older build that a loader would pick up.
    (target / "preprocessor_config.json").write_text("{}")
    assert main(["--out", str(target), "--seed", "3", "--overwrite"]) == 0
    assert (target / "keep.txt").read_text() == "user data"
    assert not (target / "preprocessor_config.json").exists()
    assert json.loads((target / "tiny_model.json").read_text())["seed"] == 3
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers  # the staging directory is gone


def test_real_size_configs_carry_the_published_dimensions():
    from src.tiny_model import tiny_config

    two_b = tiny_config("2b")
    assert (two_b.text_config.hidden_size, two_b.text_config.num_hidden_layers) == (2048, 28)
    assert two_b.text_config.rope_parameters["mrope_section"] == [24, 20, 20]
    assert two_b.vision_config.out_hidden_size == 2048
    assert two_b.vision_config.deepstack_visual_indexes == [5, 11, 17]
    assert tiny_config("4b").text_config.hidden_size == 2560
    assert tiny_config().text_config.hidden_size == 64
    with pytest.raises(KeyError, match="2b"):
        tiny_config("8b")
