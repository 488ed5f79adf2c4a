"""Named prompt schemes. `prompts.system` / `prompts.user` in the YAML replace a scheme's text.

The same scheme builds the user turn at training and at inference, so the model is asked the
question it was trained on. Each scheme names the builder that writes its answers
(src/datasets/builders/). Adding a scheme is one entry in PROMPT_SCHEMES (plus its test): the
config accepts every name listed here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PromptScheme:
    """The system and user text of one way of asking. `{n_images}` and `{desc}` are filled in."""

    name: str
    system: str
    user: str
    builder: str  # the registered builder that answers it: grounding (all objects), description, summary


PROMPT_SCHEMES: dict[str, PromptScheme] = {
    "dense": PromptScheme(
        name="dense",
        system="You are a helpful assistant.",
        user=("Locate every object in the image. Answer in JSON as a list of "
              '{"bbox_2d": [x1, y1, x2, y2], "label": "..."} or {"quad": [x1, y1, x2, y2, x3, y3, x4, y4], '
              '"label": "..."} entries, with coordinates on a 0-1000 grid.'),
        builder="grounding",
    ),
    "grounding": PromptScheme(
        name="grounding",
        system="You are a helpful assistant.",
        user='Locate every "{desc}" in the image. Answer in JSON with bbox_2d or quad coordinates.',
        builder="description",
    ),
    "summary": PromptScheme(
        name="summary",
        system="You are a helpful assistant.",
        user="Summarise the objects in the image in one sentence.",
        builder="summary",
    ),
    # Every geometry kind (src/datasets/kinds/): for sets with points and polygons too. This layer sits below
    # the kind registry (src/config < src/datasets), so the text names the kinds' keys itself.
    "dense_every_kind": PromptScheme(
        name="dense_every_kind",
        system="You are a helpful assistant.",
        user=("Locate every object in the image. Answer in JSON as a list of entries, each with a label and one of "
              '"bbox_2d": [x1, y1, x2, y2], "quad": [x1, y1, x2, y2, x3, y3, x4, y4], "point_2d": [x, y] or '
              '"polygon": [x1, y1, x2, y2, x3, y3, ...], with coordinates on a 0-1000 grid.'),
        builder="grounding",
    ),
}


def get_prompt_scheme(name: str, *, system: str | None = None, user: str | None = None) -> PromptScheme:
    """The scheme called `name`, with its system/user text replaced where an override is given.

    Raises KeyError naming the valid schemes for an unknown name.
    """
    try:
        scheme = PROMPT_SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown prompt scheme {name!r}; valid: {', '.join(PROMPT_SCHEMES)}") from None
    return PromptScheme(name=scheme.name, system=scheme.system if system is None else system,
                        user=scheme.user if user is None else user, builder=scheme.builder)
