"""Build a tiny, randomly initialised Qwen3-VL model directory, fully offline.

    python -m src.tiny_model --out DIR [--seed N] [--overwrite]

The directory loads with plain transformers (``Qwen3VLForConditionalGeneration``,
``AutoProcessor``) and with ms-swift (``model_type='qwen3_vl'``, ``template='qwen3_vl'``).
It is a test fixture: real Qwen3-VL layout, ids and processor settings, ~10 M parameters.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from src.config.offline import apply_offline_env

apply_offline_env()  # before the first transformers import in the process

import torch
from transformers import (
    GenerationConfig,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from src.tiny_model.tokenizer import QWEN3_VL_CHAT_TEMPLATE, build_tokenizer

BUILDER_VERSION = 2  # 2: Qwen's own vocabulary (was a small BPE trained on a built-in corpus)
MARKER_FILE = "tiny_model.json"
VOCAB_SIZE = 151936
IMAGE_TOKEN_ID = 151655
VIDEO_TOKEN_ID = 151656
VISION_START_TOKEN_ID = 151652
VISION_END_TOKEN_ID = 151653
EOS_TOKEN_ID = 151645  # <|im_end|>
PAD_TOKEN_ID = 151643  # <|endoftext|>

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
SIZES: dict[str, dict[str, dict]] = {
    "tiny": {"text": {}, "vision": {}},
    "2b": {"text": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128},
           "vision": {**_REAL_VISION, "out_hidden_size": 2048}},
    "4b": {"text": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128},
           "vision": {**_REAL_VISION, "out_hidden_size": 2560}},
}
# mrope sections sum to head_dim // 2: [4, 2, 2] for the tiny head_dim 16, Qwen3-VL's [24, 20, 20] for 128.
_MROPE_SECTION = {16: [4, 2, 2], 128: [24, 20, 20]}


# The Qwen3-VL families the builder makes: (config class, model class, text-config keys added to the dense one).
# The MoE's experts are few and small, routed top-2; every decoder layer is sparse, as in Qwen3-VL-30B-A3B.
ARCHS: dict[str, tuple[type, type, dict]] = {
    "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration, {}),
    "qwen3_vl_moe": (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration,
                     {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                      "decoder_sparse_step": 1, "mlp_only_layers": []}),
}


def tiny_config(size: str = "tiny", arch: str = "qwen3_vl") -> Qwen3VLConfig | Qwen3VLMoeConfig:
    """Return a Qwen3-VL config: real vocab and token ids, bf16, tied embeddings; toy widths for "tiny",
    the published dimensions for "2b" and "4b" (dense only). `arch` "qwen3_vl_moe" gives the MoE family
    (`ARCHS`). Raises KeyError naming the valid values for another size or arch."""
    if size not in SIZES:
        raise KeyError(f"unknown size {size!r}; valid: {', '.join(SIZES)}")
    if arch not in ARCHS or (arch != "qwen3_vl" and size != "tiny"):
        valid = ", ".join(ARCHS) if arch not in ARCHS else f"size tiny for {arch}"
        raise KeyError(f"unknown arch {arch!r} for size {size!r}; valid: {valid}")
    config_class, model_class, moe_keys = ARCHS[arch]
    text_config = {
        "vocab_size": VOCAB_SIZE,
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
        "bos_token_id": PAD_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "pad_token_id": PAD_TOKEN_ID,
        "dtype": "bfloat16",
    }
    text_config.update(SIZES[size]["text"], **moe_keys)
    text_config["rope_parameters"]["mrope_section"] = _MROPE_SECTION[text_config["head_dim"]]
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
    config = config_class(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        vision_start_token_id=VISION_START_TOKEN_ID,
        vision_end_token_id=VISION_END_TOKEN_ID,
        tie_word_embeddings=True,
    )
    config.architectures = [model_class.__name__]
    config.dtype = torch.bfloat16
    return config


def _build_processor() -> Qwen3VLProcessor:
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
        tokenizer=build_tokenizer(),
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )


def _build_model(seed: int, size: str = "tiny", arch: str = "qwen3_vl"):
    torch.manual_seed(seed)
    # fp32 init on CPU, then one cast: the same seed gives the same bits on every machine.
    with torch.device("cpu"):
        model = ARCHS[arch][1](tiny_config(size, arch))
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=PAD_TOKEN_ID,
        eos_token_id=[EOS_TOKEN_ID, PAD_TOKEN_ID],
        pad_token_id=PAD_TOKEN_ID,
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
                     arch: str = "qwen3_vl") -> Path:
    """Write the tiny Qwen3-VL model directory and return its resolved path.

    Promises: ``out_dir`` then holds config.json, model.safetensors (bf16), generation_config.json,
    tokenizer.json, tokenizer_config.json, processor_config.json (image + video processor),
    chat_template.jinja and tiny_model.json ({builder, builder_version, seed}). The same seed gives
    a byte-identical model.safetensors; different seeds give different weights. Nothing touches
    the network. Raises ``OutputDirNotEmptyError`` (a ``FileExistsError``) if ``out_dir`` has
    content and ``overwrite`` is false; with ``overwrite`` the files a build writes are replaced
    and other files in the directory are kept. Files appear only once the whole build succeeded.
    ``size`` "2b"/"4b" gives the published Qwen3-VL dimensions with random weights (for GPU speed checks);
    ``arch`` "qwen3_vl_moe" the MoE family (config.json then says ``model_type: qwen3_vl_moe``).
    """
    out_dir = Path(out_dir).expanduser().resolve()
    _check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    # Build next to the target, then move in: a failed build leaves no half-written model.
    with tempfile.TemporaryDirectory(
        prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent
    ) as tmp:
        staging = Path(tmp)
        _build_processor().save_pretrained(staging)
        _build_model(seed, size, arch).save_pretrained(staging)
        marker = {
            "builder": "src.tiny_model",
            "builder_version": BUILDER_VERSION,
            "seed": seed,
            **({"size": size} if size != "tiny" else {}),
            **({"arch": arch} if arch != "qwen3_vl" else {}),
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
                        help="tiny (default, ~10 M parameters) or the published 2b/4b dimensions, random weights")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen3_vl",
                        help="qwen3_vl (dense, default) or qwen3_vl_moe (4 experts, top-2 routing; size tiny)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: returns 0 after a build, 2 when --out is not empty (or not a directory).

    Bad arguments make argparse exit with status 2 (SystemExit), as usual.
    """
    args = build_parser().parse_args(argv)
    try:
        path = build_tiny_model(args.out, seed=args.seed, overwrite=args.overwrite, size=args.size,
                                arch=args.arch)
    except (OutputDirNotEmptyError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
