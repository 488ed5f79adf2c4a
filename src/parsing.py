"""Parsing a model answer back into objects: Qwen3-VL JSON (fenced or not), truncated output, junk.

A parse never fails silently: the result says how many entries were complete and why the rest
was not read, so evaluation can count failures instead of treating them as empty answers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL)
GEOMETRY_LENGTHS = {"bbox_2d": 4, "quad": 8}


@dataclass(slots=True)
class ParsedAnswer:
    """Objects read from an answer (`kind`, `coords` in the answer's space, `label`, `image` if given)."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # why (part of) the answer could not be read; None when all of it was
    truncated: bool = False


def _strip_fence(text: str) -> str:
    match = FENCE_RE.search(text)
    return match.group(1) if match else text


def _entry_to_object(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        return None
    kinds = [k for k in GEOMETRY_LENGTHS if k in entry]
    if len(kinds) != 1:
        return None
    coords = entry[kinds[0]]
    if (not isinstance(coords, list) or len(coords) != GEOMETRY_LENGTHS[kinds[0]]
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coords)):
        return None
    obj = {"kind": kinds[0], "coords": [float(v) for v in coords], "label": str(entry.get("label", ""))}
    if isinstance(entry.get("image"), int):
        obj["image"] = entry["image"]
    return obj


def _complete_entries(body: str) -> tuple[list[Any], bool]:
    """Decode `{...}` entries one by one from a JSON list that may be cut off; (entries, truncated)."""
    decoder = json.JSONDecoder()
    start = body.find("[")
    if start < 0:
        return [], True
    pos, entries = start + 1, []
    while True:
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(body):
            return entries, True
        if body[pos] == "]":
            return entries, False
        try:
            entry, pos = decoder.raw_decode(body, pos)
        except json.JSONDecodeError:
            return entries, True
        entries.append(entry)


def parse_answer(text: str) -> ParsedAnswer:
    """Read every complete object from a Qwen3-VL JSON answer.

    Accepts a bare JSON list or one inside ```json fences; keeps the complete entries of a
    truncated list; an entry with a bad geometry is skipped and counted in `error`.
    """
    body = _strip_fence(text).strip()
    entries, truncated = _complete_entries(body)
    result = ParsedAnswer(truncated=truncated)
    bad = 0
    for entry in entries:
        obj = _entry_to_object(entry)
        if obj is None:
            bad += 1
        else:
            result.objects.append(obj)
    problems = []
    if truncated:
        problems.append("no JSON list found" if not entries and "[" not in body else "answer cut off")
    if bad:
        problems.append(f"{bad} entr{'y' if bad == 1 else 'ies'} without a valid bbox_2d/quad")
    result.error = "; ".join(problems) or None
    return result
