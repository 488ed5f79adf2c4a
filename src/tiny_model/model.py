"""Build a tiny, randomly initialised Qwen3-VL (or Qwen3-VL-MoE, Qwen3.5, Qwen3.5-MoE) model directory, offline.

    python -m src.tiny_model --out DIR [--arch qwen3_vl|qwen3_vl_moe|qwen3_5|qwen3_5_moe] [--size S] [--seed N]

The directory loads with plain transformers (``AutoModelForImageTextToText``, ``AutoProcessor``) and with
ms-swift (``model_type`` the arch's name, ``template`` the family's: src/config/families.py). It is a test
fixture: the family's real layout, token ids and processor settings, ~10 M parameters (16 M for Qwen3.5,
whose vocabulary is 248,320 wide).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from src.config.offline import apply_offline_env

apply_offline_env()  # before the first transformers import in the process

import torch
from transformers import (
    GenerationConfig,
    Qwen2VLImageProcessor,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeConfig,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from src.tiny_model.tokenizer import QWEN3_5_ADDED_SHIFT, QWEN3_VL_CHAT_TEMPLATE, build_tokenizer

BUILDER_VERSION = 2  # 2: Qwen's own vocabulary (was a small BPE trained on a built-in corpus)
MARKER_FILE = "tiny_model.json"
VOCAB_SIZE = 151936
IMAGE_TOKEN_ID = 151655
VIDEO_TOKEN_ID = 151656
VISION_START_TOKEN_ID = 151652
VISION_END_TOKEN_ID = 151653
EOS_TOKEN_ID = 151645  # <|im_end|>
PAD_TOKEN_ID = 151643  # <|endoftext|>
QWEN3_5_VOCAB_SIZE = 248320

# Names a previous build (or any save_pretrained of a Qwen3-VL) may have left behind; with
# --overwrite these are removed so a stale file cannot shadow the new build. Anything else in
# the directory is left alone: --overwrite must never wipe a directory given by mistake.
_OWNED_NAMES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "chat_template.json",
        "processor_config.json",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
        MARKER_FILE,
    }
)


class OutputDirNotEmptyError(FileExistsError):
    """Raised when the output directory has content and overwriting was not requested."""


# Published Qwen3-VL dimensions (config.json of the released models), for speed checks with random
# weights: a randomly initialised model of the real size trains at the real tokens/s.
_REAL_VISION = {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]}
_QWEN3_5_LAYERS = ["linear_attention"] * 3 + ["full_attention"]
_QWEN3_5_LARGE = {"num_attention_heads": 16, "head_dim": 256, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
                  "linear_num_key_heads": 16, "linear_num_value_heads": 32, "tie_word_embeddings": False,
                  "rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                                      "mrope_interleaved": True, "mrope_section": [11, 11, 10]}}
_QWEN3_5_VISION = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                   "num_position_embeddings": 2304}
SIZES: dict[str, dict[str, dict]] = {
    "tiny": {"text": {}, "vision": {}},
    "2b": {"text": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128},
           "vision": {**_REAL_VISION, "out_hidden_size": 2048}},
    "4b": {"text": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128},
           "vision": {**_REAL_VISION, "out_hidden_size": 2560}},
    # Qwen3-VL-30B-A3B: 48 sparse layers of 128 experts (8 routed per token), the 27-layer vision tower of
    # the larger Qwen3-VL models.
    "30b-a3b": {"text": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 48,
                         "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                         "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
                         "tie_word_embeddings": False},
                "vision": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                           "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24],
                           "out_hidden_size": 2048}},
    # Qwen3.5-9B and Qwen3.5-35B-A3B (config.json of the released models): three Gated DeltaNet layers then
    # one gated full-attention layer, head_dim 256 with rotary on a quarter of it; the same 27-layer vision
    # tower without deepstack. (Their multi-token-prediction head is not part of transformers' model.)
    "9b": {"text": {**_QWEN3_5_LARGE, "hidden_size": 4096, "intermediate_size": 12288, "num_key_value_heads": 4,
                    "num_hidden_layers": 32, "layer_types": _QWEN3_5_LAYERS * 8},
           "vision": {**_QWEN3_5_VISION, "out_hidden_size": 4096}},
    "35b-a3b": {"text": {**_QWEN3_5_LARGE, "hidden_size": 2048, "num_key_value_heads": 2,
                         "num_hidden_layers": 40, "layer_types": _QWEN3_5_LAYERS * 10, "num_experts": 256,
                         "num_experts_per_tok": 8,
                         "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512},
                "vision": {**_QWEN3_5_VISION, "out_hidden_size": 2048}},
}
# mrope sections sum to head_dim // 2: [4, 2, 2] for the tiny head_dim 16, Qwen3-VL's [24, 20, 20] for 128.
_MROPE_SECTION = {16: [4, 2, 2], 128: [24, 20, 20]}


@dataclass(frozen=True, slots=True)
class Arch:
    """One family the builder makes: its transformers classes, what its text and vision configs add to or
    drop from the dense Qwen3-VL ones, where its added tokens sit, and the published sizes it has."""

    config_class: type
    model_class: type
    text_keys: dict = field(default_factory=dict)
    text_drop: tuple[str, ...] = ()
    vision_drop: tuple[str, ...] = ()
    added_shift: int = 0  # the added tokens' ids minus Qwen3-VL's (151643..)
    vocab_size: int = VOCAB_SIZE
    sizes: tuple[str, ...] = ("tiny",)

    def token_id(self, qwen3_vl_id: int) -> int:
        """This family's id of an added token Qwen3-VL has at `qwen3_vl_id`."""
        return qwen3_vl_id + self.added_shift


_TINY_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
# Qwen3.5: a Gated DeltaNet (linear attention) layer then a gated full-attention one, as the real models
# alternate them; rotary on a quarter of head_dim (mrope sections sum to head_dim * 0.25 / 2); no deepstack.
_QWEN3_5_TEXT = {
    "layer_types": ["linear_attention", "full_attention"], "head_dim": 32,
    "linear_conv_kernel_dim": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "bos_token_id": None,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                        "mrope_interleaved": True, "mrope_section": [2, 1, 1]},
}

# The families the builder makes. The MoEs' experts are few and small, routed top-2, every decoder layer
# sparse, as in Qwen3-VL-30B-A3B; Qwen3.5-MoE adds its shared expert.
ARCHS: dict[str, Arch] = {
    "qwen3_vl": Arch(Qwen3VLConfig, Qwen3VLForConditionalGeneration, sizes=("tiny", "2b", "4b")),
    "qwen3_vl_moe": Arch(Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration,
                         {**_TINY_MOE, "decoder_sparse_step": 1, "mlp_only_layers": []},
                         sizes=("tiny", "30b-a3b")),
    "qwen3_5": Arch(Qwen3_5Config, Qwen3_5ForConditionalGeneration, _QWEN3_5_TEXT,
                    vision_drop=("deepstack_visual_indexes",), added_shift=QWEN3_5_ADDED_SHIFT,
                    vocab_size=QWEN3_5_VOCAB_SIZE, sizes=("tiny", "9b")),
    "qwen3_5_moe": Arch(Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration,
                        {**_QWEN3_5_TEXT, **_TINY_MOE, "shared_expert_intermediate_size": 32},
                        text_drop=("intermediate_size",), vision_drop=("deepstack_visual_indexes",),
                        added_shift=QWEN3_5_ADDED_SHIFT, vocab_size=QWEN3_5_VOCAB_SIZE, sizes=("tiny", "35b-a3b")),
}


def tiny_config(size: str = "tiny", arch: str = "qwen3_vl", layers: int | None = None):
    """Return the config of a family (`ARCHS`): real vocabulary size and added-token ids, bf16, embeddings
    tied as the published model ties them; toy widths for "tiny", the published dimensions for "2b"/"4b"
    (Qwen3-VL) and "30b-a3b" (Qwen3-VL-MoE). `layers` keeps every width but cuts the language model to
    that many layers (a big model's per-layer speed on a machine that cannot hold all of it). Raises
    KeyError naming the valid values for another arch or a size the arch lacks."""
    if arch not in ARCHS:
        raise KeyError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    family = ARCHS[arch]
    if size not in family.sizes:
        raise KeyError(f"unknown size {size!r} for {arch}; valid: {', '.join(family.sizes)}")
    text_config = {
        "vocab_size": family.vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        # mrope_section must sum to head_dim // 2 (t, h, w interleaved as in Qwen3-VL).
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_interleaved": True,
            "mrope_section": [4, 2, 2],
        },
        "bos_token_id": family.token_id(PAD_TOKEN_ID),
        "eos_token_id": family.token_id(EOS_TOKEN_ID),
        "pad_token_id": family.token_id(PAD_TOKEN_ID),
        "dtype": "bfloat16",
    }
    text_config.update(family.text_keys)
    text_config.update(SIZES[size]["text"])
    for key in family.text_drop:
        text_config.pop(key)
    if layers is not None:
        text_config["num_hidden_layers"] = layers
        if "layer_types" in text_config:  # the family's pattern of layer kinds, repeated
            pattern = text_config["layer_types"]
            text_config["layer_types"] = [pattern[i % len(pattern)] for i in range(layers)]
    if "partial_rotary_factor" not in text_config["rope_parameters"]:
        text_config["rope_parameters"] = {**text_config["rope_parameters"],
                                          "mrope_section": _MROPE_SECTION[text_config["head_dim"]]}
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 64,  # = text hidden size
        # The position-embedding table is interpolated on a sqrt(n) x sqrt(n) grid: n must be square.
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [1],
        "initializer_range": 0.02,
        "hidden_act": "gelu_pytorch_tanh",
        "dtype": "bfloat16",
    }
    vision_config.update(SIZES[size]["vision"])
    for key in family.vision_drop:
        vision_config.pop(key)
    config = family.config_class(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=family.token_id(IMAGE_TOKEN_ID),
        video_token_id=family.token_id(VIDEO_TOKEN_ID),
        vision_start_token_id=family.token_id(VISION_START_TOKEN_ID),
        vision_end_token_id=family.token_id(VISION_END_TOKEN_ID),
        tie_word_embeddings=text_config["tie_word_embeddings"],
    )
    config.architectures = [family.model_class.__name__]
    config.dtype = torch.bfloat16
    return config


def _build_processor(added_shift: int = 0) -> Qwen3VLProcessor:
    # Qwen3-VL geometry (patch 16, merge 2, temporal 2, mean/std 0.5); min/max pixels stay at the
    # transformers class defaults so plain-transformers runs on CPU stay small.
    image_processor = Qwen2VLImageProcessor(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    # transformers 5's Qwen3VLProcessor refuses to load without a video processor.
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(added_shift),
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )


def _build_model(seed: int, size: str = "tiny", arch: str = "qwen3_vl", layers: int | None = None):
    torch.manual_seed(seed)
    family = ARCHS[arch]
    config = tiny_config(size, arch, layers)
    if size == "tiny":  # fp32 init on CPU, then one cast: the same seed gives the same bits on every machine
        with torch.device("cpu"):
            model = family.model_class(config)
    else:  # a published size: bf16 from the start (fp32 would need twice the memory), bits not pinned
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device("cpu"):
                model = family.model_class(config)
        finally:
            torch.set_default_dtype(default)
    model = model.to(torch.bfloat16)
    pad, eos = family.token_id(PAD_TOKEN_ID), family.token_id(EOS_TOKEN_ID)
    model.generation_config = GenerationConfig(
        bos_token_id=pad,
        eos_token_id=[eos, pad],
        pad_token_id=pad,
        # Greedy by default: a fixture's generate() output should not depend on RNG state.
        do_sample=False,
    )
    return model.eval()


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirNotEmptyError(
            f"output path {str(out_dir)!r} exists and is not a directory"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputDirNotEmptyError(
            f"output directory {str(out_dir)!r} is not empty; pass --overwrite (overwrite=True) to replace it"
        )


def build_tiny_model(out_dir: Path, seed: int = 0, overwrite: bool = False, size: str = "tiny",
                     arch: str = "qwen3_vl", layers: int | None = None) -> Path:
    """Write the tiny Qwen3-VL model directory and return its resolved path.

    Promises: ``out_dir`` then holds config.json, model.safetensors (bf16), generation_config.json,
    tokenizer.json, tokenizer_config.json, processor_config.json (image + video processor),
    chat_template.jinja and tiny_model.json ({builder, builder_version, seed}). The same seed gives
    a byte-identical model.safetensors; different seeds give different weights. Nothing touches
    the network. Raises ``OutputDirNotEmptyError`` (a ``FileExistsError``) if ``out_dir`` has
    content and ``overwrite`` is false; with ``overwrite`` the files a build writes are replaced
    and other files in the directory are kept. Files appear only once the whole build succeeded.
    ``size`` "2b"/"4b" (Qwen3-VL), "30b-a3b" (Qwen3-VL-MoE), "9b" (Qwen3.5) and "35b-a3b" (Qwen3.5-MoE)
    give published dimensions with random weights (for GPU speed checks); ``arch`` picks the family
    (`ARCHS`; config.json's ``model_type`` is it); ``layers`` cuts the language model to that many layers
    (`tiny_config`).
    """
    out_dir = Path(out_dir).expanduser().resolve()
    _check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    # Build next to the target, then move in: a failed build leaves no half-written model.
    with tempfile.TemporaryDirectory(
        prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent
    ) as tmp:
        staging = Path(tmp)
        _build_processor(ARCHS[arch].added_shift).save_pretrained(staging)
        _build_model(seed, size, arch, layers).save_pretrained(staging)
        marker = {
            "builder": "src.tiny_model",
            "builder_version": BUILDER_VERSION,
            "seed": seed,
            **({"size": size} if size != "tiny" else {}),
            **({"arch": arch} if arch != "qwen3_vl" else {}),
            **({"layers": layers} if layers is not None else {}),
        }
        (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")

        out_dir.mkdir(exist_ok=True)
        for name in _OWNED_NAMES:
            stale = out_dir / name
            if stale.is_file() or stale.is_symlink():
                stale.unlink()
        for item in sorted(staging.iterdir()):
            # safetensors writes its file 0600; the fixture is meant to be shared and read.
            item.chmod(0o644)
            shutil.move(str(item), out_dir / item.name)
    return out_dir


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `python -m src.tiny_model` parser (every flag with its help)."""
    parser = argparse.ArgumentParser(
        prog="python -m src.tiny_model", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output directory (created if missing)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch seed for the random weights (default 0)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous build in a non-empty --out",
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny (default, ~10 M parameters) or published dimensions with random weights: "
                             "2b/4b (qwen3_vl), 30b-a3b (qwen3_vl_moe), 9b (qwen3_5), 35b-a3b (qwen3_5_moe)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen3_vl",
                        help="qwen3_vl (dense, default), qwen3_vl_moe (4 experts, top-2), qwen3_5 (linear + full "
                             "attention layers), qwen3_5_moe")
    parser.add_argument("--layers", type=_positive, help="cut the language model to N layers, every width kept")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: returns 0 after a build, 2 when --out is not empty (or not a directory).

    Bad arguments make argparse exit with status 2 (SystemExit), as usual.
    """
    args = build_parser().parse_args(argv)
    try:
        path = build_tiny_model(args.out, seed=args.seed, overwrite=args.overwrite, size=args.size,
                                arch=args.arch, layers=args.layers)
    except (OutputDirNotEmptyError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
