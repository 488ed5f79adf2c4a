"""The model families the project trains: one row each, with what differs between them.

`model.model_type` (ms-swift's name, also the `model_type` in the model directory's config.json) picks
the row. The aligner is what the recipes' `freeze_aligner` and stage 1 mean (ms-swift's own model
architecture table says the same; a test holds them equal). The coordinate convention is how the
family writes boxes: the project's answers are Qwen3-VL's 0..1000 grid of the original image
(`custom.emit_norm: norm1000`), so a family with another convention is refused, not trained wrong.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Family:
    """One model family: its aligner modules, its box convention, and whether the project trains it."""

    template: str
    """ms-swift's chat template for the family (its models' default): `template.template` must name it."""
    aligner: tuple[str, ...]
    """Parameter-name prefixes of the aligner (vision -> language projection)."""
    coordinates: str
    """How the family's boxes are written."""
    trained: bool
    """False: the config is refused with `refusal`."""
    tested: str = ""
    """What the tests run on it (the tiny model), or why nothing."""
    refusal: str = ""


_QWEN3_VL_ALIGNER = ("model.visual.merger", "model.visual.deepstack_merger_list")
_NORM1000 = "0..1000 grid of the original image (norm1000)"

FAMILIES: dict[str, Family] = {
    "qwen3_vl": Family("qwen3_vl", _QWEN3_VL_ALIGNER, _NORM1000, True,
                       "every recipe, DeepSpeed, the learning proof"),
    "qwen3_vl_moe": Family("qwen3_vl", _QWEN3_VL_ALIGNER, _NORM1000, True,
                           "every recipe; inference and evaluation; a short learning proof"),
    "qwen3_5": Family("qwen3_5", ("model.visual.merger",), _NORM1000, True,
                      "every recipe; inference and evaluation (Qwen's 151,643 ranks: the real 248k BPE is not "
                      "available offline)"),
    "qwen3_5_moe": Family("qwen3_5", ("model.visual.merger",), _NORM1000, True, "every recipe"),
    "qwen2_5_vl": Family("qwen2_5_vl", ("model.visual.merger",),
                         "absolute pixels of the image as resized by its processor",
                         False, refusal="Qwen2.5-VL writes boxes in pixels of the image as its processor resized "
                                        "it, which the project's answers (0..1000 of the original image) are not"),
}
