"""Checking a YAML value against a type annotation given as source text (as ms-swift declares it).

Only the shapes that appear in `SftArguments` are understood: builtins, Optional/Union/`|`,
List/Dict/Tuple and Literal. An annotation outside that set accepts any value, so a new ms-swift
field with an exotic type is never refused by this layer (ms-swift still checks it).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_BUILTINS: dict[str, Check] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "None": lambda v: v is None,
    "NoneType": lambda v: v is None,
}
_ANY: Check = lambda v: True  # noqa: E731


def _name(node: ast.expr) -> str:
    return ast.unparse(node).split(".")[-1]


def _compile(node: ast.expr) -> Check:
    if isinstance(node, ast.Constant):
        if node.value is None:
            return _BUILTINS["None"]
        if isinstance(node.value, str):  # a quoted forward reference
            return _compile(ast.parse(node.value, mode="eval").body)
        return _ANY
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _compile(node.left), _compile(node.right)
        return lambda v: left(v) or right(v)
    if isinstance(node, ast.Subscript):
        outer = _name(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer == "Optional":
            inner = _compile(args[0])
            return lambda v: v is None or inner(v)
        if outer == "Union":
            checks = [_compile(a) for a in args]
            return lambda v: any(c(v) for c in checks)
        if outer == "Literal":
            allowed = [a.value for a in args if isinstance(a, ast.Constant)]
            return lambda v: any(v == a and type(v) is type(a) for a in allowed)
        if outer in ("List", "list", "Sequence"):
            inner = _compile(args[0])
            return lambda v: isinstance(v, list) and all(inner(x) for x in v)
        if outer in ("Dict", "dict", "Mapping"):
            return _BUILTINS["dict"]
        if outer in ("Tuple", "tuple"):
            return lambda v: isinstance(v, list)
        return _ANY
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = _name(node)
        if name in ("List", "Sequence"):
            return _BUILTINS["list"]
        if name in ("Dict", "Mapping"):
            return _BUILTINS["dict"]
        return _BUILTINS.get(name, _ANY)
    return _ANY


@functools.cache
def checker_for(annotation: str) -> Check:
    """A predicate telling whether a YAML value fits `annotation` (e.g. "Optional[List[str]]")."""
    try:
        return _compile(ast.parse(annotation, mode="eval").body)
    except SyntaxError:
        return _ANY


def describe(annotation: str) -> str:
    """A short human phrase for the annotation, used in error messages."""
    return annotation.replace("typing.", "")
