"""Builders: records -> ms-swift rows, one class per kind of answer, found by name in a registry.

A prompt scheme (src/config/prompts.py) names the builder that answers it (`PromptScheme.builder`).
To add a kind of answer: subclass `BaseBuilder` in a module of this package, decorate it with
`@register_builder("name")`, import that module below, and name it from a scheme.

Each builder owns an answer codec (`AnswerCodec`, codec.py: `emit_norm` and the object order): the objects its
answers hold, the answer text, and the reading back to pixels, for the engine, the health check and the rewards.
"""

from __future__ import annotations

from collections.abc import Callable

from src.config.prompts import PromptScheme

from .base import ROW_GEOMETRY_KEY, ROW_SOURCE_KEY, BaseBuilder, ImageGeometry, geometry_payload, row_geometry
from .codec import AnswerCodec, ObjectsOnImage, parsed_objects, read_answer
from .description import DescriptionBuilder
from .grounding import GroundingBuilder
from .summary import SummaryBuilder

BUILDERS: dict[str, type[BaseBuilder]] = {}


def register_builder(name: str, builder: type[BaseBuilder] | None = None) -> Callable | type[BaseBuilder]:
    """Register `builder` under `name` (or use as `@register_builder(name)`); a name taken twice is refused."""

    def add(cls: type[BaseBuilder]) -> type[BaseBuilder]:
        if name in BUILDERS:
            raise ValueError(f"builder {name!r} is registered already (by {BUILDERS[name].__name__})")
        if not (isinstance(cls, type) and issubclass(cls, BaseBuilder)):
            raise TypeError(f"builder {name!r} must subclass BaseBuilder, got {cls!r}")
        BUILDERS[name] = cls
        return cls

    return add(builder) if builder is not None else add


register_builder("grounding", GroundingBuilder)
register_builder("description", DescriptionBuilder)
register_builder("summary", SummaryBuilder)


def make_builder(scheme: PromptScheme, emit_norm: str, object_order: str) -> BaseBuilder:
    """The builder a prompt scheme names, set up with the answer's coordinate space and object order.

    Raises ValueError naming the valid builders for an unknown name."""
    try:
        cls = BUILDERS[scheme.builder]
    except KeyError:
        raise ValueError(f"prompt scheme {scheme.name!r} names an unknown builder {scheme.builder!r}; "
                         f"registered: {', '.join(sorted(BUILDERS))}") from None
    return cls(scheme, emit_norm=emit_norm, object_order=object_order)


__all__ = ["BUILDERS", "ROW_GEOMETRY_KEY", "ROW_SOURCE_KEY", "AnswerCodec", "BaseBuilder", "DescriptionBuilder",
           "GroundingBuilder", "ImageGeometry", "ObjectsOnImage", "SummaryBuilder", "geometry_payload",
           "make_builder", "parsed_objects", "read_answer", "register_builder", "row_geometry"]
