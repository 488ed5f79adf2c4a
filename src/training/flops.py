"""Model FLOPs of a training step of a Qwen3-VL model, from its Hugging Face config: what MFU divides by.

Pure arithmetic (no torch). Conventions, the usual ones of MFU figures (PaLM, appendix B):

- a matrix product of a token with a weight of N entries costs 2N FLOPs (one multiply, one add);
- forward 2N per token for every weight the token passes; backward 2N more for the gradient of the input,
  only where a gradient flows (the part or a part before it trains something), and 2N for the gradient of
  the weight, only for trained weights (a LoRA run trains its adapters: the frozen base weights get none);
- gradient checkpointing (recomputation) runs the checkpointed part's forward again, where a gradient flows;
- attention's products of activations with activations (Q K^T and the weighted sum of V) cost
  4 * L * heads * head_dim per token and layer forward for a sequence of L tokens, counted without the
  causal half (as PaLM does), twice that backward;
- norms, activations, rotary embeddings, softmax, the loss and the optimizer are not counted.

The model is cut into four parts, in the order the data flows through them (`PARTS`):
`vision` (the ViT: patch embedding and blocks, per patch), `aligner` (the merger and the deepstack mergers,
per image token: one image token is `merge_size**2` patches), `llm` (the decoder layers, per token of the
sequence, image placeholders included) and `lm_head` (per position the logits are computed on).
Gated DeltaNet (linear-attention) layers (Qwen3.5) are not modelled: `dims_from_config` refuses them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

PARTS = ("vision", "aligner", "llm", "lm_head")

# An output layer that computes fewer rows than it is given (answer-only logits: the labelled positions) sets
# this attribute on itself to that count at each forward; the step's FLOPs count those rows for the head.
SCORED_ROWS_ATTR = "scored_rows"


class UnsupportedModel(ValueError):
    """The config describes layers this module does not count (the message names the key)."""


@dataclass(frozen=True, slots=True)
class TextDims:
    """The language model's shapes (`text_config` of a Qwen3-VL config)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    sparse_layers: int = 0  # layers whose MLP is a mixture of experts (Qwen3-VL-MoE)
    experts: int = 0
    experts_per_token: int = 0
    expert_intermediate: int = 0


@dataclass(frozen=True, slots=True)
class VisionDims:
    """The vision tower's shapes (`vision_config` of a Qwen3-VL config)."""

    hidden: int
    depth: int
    intermediate: int
    in_channels: int
    patch: int
    temporal_patch: int
    merge: int
    out_hidden: int
    deepstack: int  # deepstack mergers (one per index in deepstack_visual_indexes)


@dataclass(frozen=True, slots=True)
class ModelDims:
    """A model's shapes: its language model and, for a vision-language model, its vision tower."""

    text: TextDims
    vision: VisionDims | None


@dataclass(frozen=True, slots=True)
class Regime:
    """What the recipe does to each part (keys from `PARTS`), in weights a token multiplies.

    `adapters`: weights added next to a part's own (LoRA's A and B), which every token also passes;
    `trained`: weights that get a weight gradient (the adapters under LoRA, the part's own weights when it
    is trained fully); `recompute`: parts whose forward runs again in the backward pass."""

    adapters: Mapping[str, int] = field(default_factory=dict)
    trained: Mapping[str, int] = field(default_factory=dict)
    recompute: frozenset[str] = frozenset()

    def gradient_flows(self, part: str) -> bool:
        """True when a gradient reaches `part`: it or a part before it in `PARTS` trains something."""
        upto = PARTS[:PARTS.index(part) + 1]
        return any(self.trained.get(p, 0) > 0 for p in upto)


def _require(config: Mapping, key: str, where: str):
    if config.get(key) is None:
        raise UnsupportedModel(f"{where}.{key} is missing: the FLOPs of this model cannot be counted")
    return config[key]


def dims_from_config(config: Mapping) -> ModelDims:
    """The shapes of a Qwen3-VL (dense or MoE) model from its config as a dict (`config.json`, or
    `model.config.to_dict()`); a text-only config (no `text_config`) gives `vision=None`.

    Raises UnsupportedModel naming the key for what it does not count (linear-attention layers, a missing
    dimension)."""
    text = config.get("text_config") or config
    where = "text_config" if "text_config" in config else "config"
    kinds = set(text.get("layer_types") or ["full_attention"])
    if kinds - {"full_attention"}:
        raise UnsupportedModel(f"{where}.layer_types holds {sorted(kinds - {'full_attention'})}: only full-attention "
                               "layers are counted (Gated DeltaNet layers are not modelled)")
    hidden, heads = _require(text, "hidden_size", where), _require(text, "num_attention_heads", where)
    layers = _require(text, "num_hidden_layers", where)
    experts = int(text.get("num_experts") or text.get("num_local_experts") or 0)  # transformers 5 says "local"
    sparse = 0
    if experts:
        step = int(text.get("decoder_sparse_step") or 1)
        dense_only = set(text.get("mlp_only_layers") or [])
        sparse = sum(1 for i in range(layers) if i not in dense_only and (i + 1) % step == 0)
    tied = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    text_dims = TextDims(
        hidden=hidden, layers=layers, heads=heads,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        intermediate=int(text.get("intermediate_size") or 0) if sparse < layers else 0,
        vocab=_require(text, "vocab_size", where), tied=tied, sparse_layers=sparse, experts=experts,
        experts_per_token=int(text.get("num_experts_per_tok") or 0) if experts else 0,
        expert_intermediate=int(text.get("moe_intermediate_size") or 0) if experts else 0)
    if sparse < layers and not text_dims.intermediate:
        _require(text, "intermediate_size", where)
    vision = config.get("vision_config")
    if not vision:
        return ModelDims(text_dims, None)
    vision_dims = VisionDims(
        hidden=_require(vision, "hidden_size", "vision_config"), depth=_require(vision, "depth", "vision_config"),
        intermediate=_require(vision, "intermediate_size", "vision_config"),
        in_channels=int(vision.get("in_channels") or 3), patch=_require(vision, "patch_size", "vision_config"),
        temporal_patch=int(vision.get("temporal_patch_size") or 1), merge=int(vision.get("spatial_merge_size") or 1),
        out_hidden=int(vision.get("out_hidden_size") or hidden),
        deepstack=len(vision.get("deepstack_visual_indexes") or []))
    return ModelDims(text_dims, vision_dims)


def matmul_params(dims: ModelDims) -> dict[str, int]:
    """Weights one unit of each part multiplies (biases and norms left out): `llm` per token (all decoder
    layers: q, k, v, o projections and the MLP, the experts a token is routed to plus the router for MoE
    layers), `lm_head` per position, `vision` per patch (patch embedding and blocks), `aligner` per image
    token (merger and deepstack mergers). `vision` and `aligner` are 0 without a vision tower."""
    t = dims.text
    attention = t.hidden * t.heads * t.head_dim * 2 + t.hidden * t.kv_heads * t.head_dim * 2
    dense_mlp = 3 * t.hidden * t.intermediate
    moe_mlp = t.experts_per_token * 3 * t.hidden * t.expert_intermediate + t.hidden * t.experts
    llm = t.layers * attention + (t.layers - t.sparse_layers) * dense_mlp + t.sparse_layers * moe_mlp
    params = {"llm": llm, "lm_head": t.hidden * t.vocab, "vision": 0, "aligner": 0}
    v = dims.vision
    if v is not None:
        patch_embed = v.in_channels * v.temporal_patch * v.patch * v.patch * v.hidden
        block = 4 * v.hidden * v.hidden + 2 * v.hidden * v.intermediate
        merged = v.hidden * v.merge * v.merge
        merger = merged * merged + merged * v.out_hidden
        params["vision"] = patch_embed + v.depth * block
        params["aligner"] = (1 + v.deepstack) * merger
    return params


def _passes(regime: Regime, part: str) -> int:
    """How many times a part's weights are multiplied per unit: forward, input gradient, recomputation."""
    flows = regime.gradient_flows(part)
    return 1 + flows + (flows and part in regime.recompute)


def _linear(dims: ModelDims, regime: Regime, part: str) -> int:
    params = matmul_params(dims)[part] + regime.adapters.get(part, 0)
    return 2 * params * _passes(regime, part) + 2 * regime.trained.get(part, 0)


def _attention_passes(regime: Regime, part: str) -> int:
    flows = regime.gradient_flows(part)
    return 1 + 2 * flows + (flows and part in regime.recompute)


def flops_per_token(dims: ModelDims, regime: Regime) -> int:
    """Training FLOPs of one text token through the decoder layers and the LM head, without attention's
    length term (`step_flops` adds it) and without the vision tower: the figure a recipe costs per token."""
    return _linear(dims, regime, "llm") + _linear(dims, regime, "lm_head")


def step_flops(dims: ModelDims, regime: Regime, seq_lens: Sequence[int], image_patches: Sequence[int] = (),
               head_positions: int | None = None) -> int:
    """Training FLOPs of the sequences `seq_lens` (real tokens each, image placeholders included) and of the
    images whose patch counts (t * h * w of `image_grid_thw`) are `image_patches`; the LM head runs on
    `head_positions` positions (default: every token).

    Per token: the decoder layers (`matmul_params`), the LM head, and attention's 4 * L * heads * head_dim
    per layer for its sequence of L tokens; per image of P patches: the ViT per patch plus its attention over
    the image's P patches, and the aligner per image token (P / merge_size**2)."""
    t = dims.text
    tokens = sum(seq_lens)
    head = tokens if head_positions is None else head_positions
    total = _linear(dims, regime, "llm") * tokens + _linear(dims, regime, "lm_head") * head
    total += _attention_passes(regime, "llm") * t.layers * 4 * t.heads * t.head_dim * sum(n * n for n in seq_lens)
    v = dims.vision
    if v is not None and image_patches:
        patches = sum(image_patches)
        total += _linear(dims, regime, "vision") * patches
        total += _attention_passes(regime, "vision") * v.depth * 4 * v.hidden * sum(p * p for p in image_patches)
        total += _linear(dims, regime, "aligner") * (patches // (v.merge * v.merge))
    return total


def part_of(name: str, tied: bool) -> str | None:
    """The part (`PARTS`) a parameter belongs to, from its name in a Qwen3-VL model (PEFT's wrappers
    allowed); None for a parameter whose use is no matrix product (the input embedding when untied)."""
    if ".visual.merger." in name or ".visual.deepstack_merger_list." in name:
        return "aligner"
    if ".visual.pos_embed." in name:  # interpolated position embeddings: a lookup, no product with the patches
        return None
    if ".visual." in name:
        return "vision"
    if "lm_head" in name or ("embed_tokens" in name and tied):
        return "lm_head"
    if "embed_tokens" in name:
        return None
    if ".layers." in name:
        return "llm"
    return None
