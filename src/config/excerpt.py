"""Values as they appear in messages: short, whatever their size.

A config value or a record field may be megabytes long (a pasted prompt, a hostile file); a message quoting it
whole is as long, and a table padded to its width is many times longer. Every message that quotes a value goes
through `excerpt`, so a message has a bounded length and still says how long the value was.
"""

from __future__ import annotations

import json
import reprlib
from typing import Any

MAX_EXCERPT_CHARS = 80  # of a value quoted in a message
_INT_REPR_DIGITS = 4000  # below Python's int->str conversion limit (4,300 digits by default)

_short = reprlib.Repr()
_short.maxstring = _short.maxother = _short.maxlong = MAX_EXCERPT_CHARS
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 8
_short.maxlevel = 3


def _big_int(value: Any) -> bool:
    return isinstance(value, int) and value.bit_length() > _INT_REPR_DIGITS * 3.32


def _shorten(text: str, length: int, limit: int) -> str:
    return f"{text[:limit]}… ({length:,} chars)"


def excerpt(value: Any, limit: int = MAX_EXCERPT_CHARS) -> str:
    """`repr(value)` when it is at most `limit` characters; else its first `limit` characters, `…` and the
    value's length, e.g. `'aaaa…' (10,485,760 chars)`. Never longer than about `limit` + 30 characters, and
    cheap for any value (a huge integer is described, not converted)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value):,} chars)"
    if _big_int(value):
        return f"<an integer of about {int(value.bit_length() * 0.30103):,} digits>"
    text = _short.repr(value)
    return text if len(text) <= limit + 20 else text[:limit] + "…"


def json_excerpt(value: Any, limit: int = MAX_EXCERPT_CHARS * 2) -> str:
    """`value` as JSON (as the resolved-config print shows it), cut like `excerpt` when longer than `limit`."""
    if isinstance(value, str) and len(value) > limit:
        return f"{json.dumps(value[:limit], ensure_ascii=False)}… ({len(value):,} chars)"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON (or an integer Python will not convert): its short repr
        return excerpt(value, limit)
    return text if len(text) <= limit else _shorten(text, len(text), limit)


def bounded(message: str, limit: int = 4000) -> str:
    """`message` itself when at most `limit` characters, else cut there with its length shown: the last guard
    on a message built from values that did not pass through `excerpt`."""
    return message if len(message) <= limit else _shorten(message, len(message), limit)


__all__ = ["MAX_EXCERPT_CHARS", "bounded", "excerpt", "json_excerpt"]
