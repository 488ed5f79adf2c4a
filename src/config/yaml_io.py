"""Reading one YAML file: safe loading, syntax errors with file:line:column, and key line numbers.

Bounded by design (openspec/specs/reliability/spec.md): a config is at most MAX_CONFIG_BYTES (at most that
many bytes plus one are ever read, so `/dev/zero` is refused at once), it is UTF-8 (a Latin-1 or UTF-16
file is refused naming the file and the byte), its aliases expand to at most MAX_YAML_VALUES values (a
"billion laughs" is refused while it is composed, before anything is expanded), an alias never refers to
its own anchor, nesting is at most what the parser can hold, and an integer has at most MAX_INT_DIGITS
digits.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config holds settings; data and prompts this long belong in files
MAX_YAML_VALUES = 100_000  # values (scalars, lists, mappings) once aliases are expanded; a config has hundreds
MAX_INT_DIGITS = 100  # no setting needs more; Python refuses to convert an int of over 4,300 digits at all


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        dotted = f"{prefix}{key_node.value}"
        out[dotted] = key_node.start_mark.line + 1
        _key_lines(value_node, dotted + ".", out)


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *anchor`, YAML's merge key: not a name, but allowed
_KEY_READ_AS = {"tag:yaml.org,2002:int": "the integer", "tag:yaml.org,2002:float": "the number",
                "tag:yaml.org,2002:timestamp": "the date"}


_INT_TAG = "tag:yaml.org,2002:int"


def _key_problem(node: yaml.Node, in_a_value: bool) -> str | None:
    """Why a mapping key is not a name (YAML 1.1 reads `on`, `1`, `null` as a bool, a number, null), or None.
    Inside a field's value (`in_a_value`) an integer key is one: ms-swift's `max_memory: {0: 20GiB}` keys GPUs
    by number (a quoted "0" would not name a device)."""
    if isinstance(node, yaml.ScalarNode) and node.tag in (_STR_TAG, _MERGE_TAG):
        return None
    if in_a_value and isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
        return None
    if not isinstance(node, yaml.ScalarNode):
        kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
        return f"a key must be a name, not a {kind}"
    if node.tag == "tag:yaml.org,2002:bool":
        read = "true" if node.value.lower() in ("yes", "true", "on", "y") else "false"
    elif node.tag == "tag:yaml.org,2002:null":
        read = "null"
    else:
        read = f"{_KEY_READ_AS.get(node.tag, node.tag)} {node.value}"
    return (f"YAML 1.1 reads the key `{node.value}` as {read}, not as a name; quote it (`\"{node.value}\": ...`) "
            f"if you mean the name")


def _check_keys(root: yaml.Node, path: Path) -> None:
    """Refuse a key set twice in one mapping (YAML keeps the last silently: a repeated section would drop the
    earlier block) and a key that is not a name, each with the file and line."""
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, prefix: str) -> None:
        if id(node) in seen_nodes:  # an aliased node, checked where its anchor is
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                walk(child, f"{prefix[:-1]}[{i}].")
            return
        if not isinstance(node, yaml.MappingNode):
            return
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            problem = _key_problem(key_node, in_a_value=prefix.count(".") >= 2)  # below section.field
            if problem:
                raise ConfigError(f"{path}:{line}: {problem}")
            if key_node.tag == _MERGE_TAG:
                continue
            dotted = f"{prefix}{key_node.value}"
            if key_node.value in lines:
                raise ConfigError(f"{path}:{line}: key `{dotted}` is also set at line {lines[key_node.value]}; YAML "
                                  f"would keep only the last one: keep one")
            lines[key_node.value] = line
            walk(value_node, dotted + ".")

    walk(root, "")


class _Refused(yaml.MarkedYAMLError):
    """A limit of this module, raised with the place (mark) where the document crossed it."""


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it past MAX_YAML_VALUES values, or an alias inside its own anchor.

    The composed graph shares an aliased node instead of copying it, so this walk (memoised per node) costs
    the graph's size however far the aliases would expand it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    largest: list[tuple[int, yaml.Node]] = []  # (expanded size, node) of nodes reached more than once

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            largest.append((sizes[key], node))
            return sizes[key]
        if key in open_nodes:
            raise _Refused(problem="an alias refers to its own anchor (a recursive structure); a config is a tree",
                           problem_mark=node.start_mark)
        open_nodes.add(key)
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if size(root) > MAX_YAML_VALUES:
        if not largest:
            raise _Refused(problem=f"the document holds more than {MAX_YAML_VALUES:,} values, the most a config may "
                                   f"hold; is it the right file?", problem_mark=root.start_mark)
        shared = max(largest, key=lambda item: item[0])[1]
        raise _Refused(problem=f"the document holds more than {MAX_YAML_VALUES:,} values once its aliases are "
                               f"expanded (a YAML alias bomb? the anchor here is the largest repeated one); write "
                               f"the values out, or use fewer aliases", problem_mark=shared.start_mark)


# libyaml (when PyYAML has it) parses about ten times faster than the pure-Python loader; both compose the
# same graph, checked by _check_expansion before anything is constructed.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _BoundedLoader(_SafeLoader):
    """The safe loader (no Python tags), refusing integers of more than MAX_INT_DIGITS digits."""

    def construct_bounded_int(self, node):
        digits = sum(c.isdigit() for c in node.value)
        if digits > MAX_INT_DIGITS:
            raise _Refused(problem=f"an integer of {digits:,} digits; the most a config takes is {MAX_INT_DIGITS}",
                           problem_mark=node.start_mark)
        return self.construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_bounded_int)


def _read_bounded(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)  # never more: a device or a huge file is refused, not read
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: the config file is larger than {MAX_CONFIG_BYTES:,} bytes (1 MiB), the most a "
                          f"config may be; is it the right file? (long texts such as prompts belong in the config "
                          f"only up to that size)")
    return data


def _decode(path: Path, data: bytes) -> str:
    """The text of a UTF-8 file (a UTF-8 BOM allowed); ConfigError naming the encoding problem otherwise."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark), but configs are "
                          f"UTF-8: save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8 {path.name}`)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        guess = "UTF-16" if b"\x00" in data[:4096] else "Latin-1 or Windows-1252"
        raise ConfigError(f"{path}:{line}:{column}: not valid UTF-8 (byte 0x{data[err.start]:02x}; the file looks "
                          f"{guess}-encoded), but configs are UTF-8: save it as UTF-8 (e.g. `iconv -f "
                          f"{'UTF-16' if guess == 'UTF-16' else 'LATIN1'} -t UTF-8 {path.name}`)") from None


def read_yaml_mapping(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Load `path` safely (no Python tags) and return (mapping, {dotted key: 1-based line}).

    Raises ConfigError naming the file (and line:column where there is one) when the file is missing, larger
    than MAX_CONFIG_BYTES, not UTF-8, not valid YAML, over the module's limits on aliases, nesting or integer
    digits, or not a mapping at the top, and for a key set twice in one mapping or a key YAML reads as a bool,
    a number or null (`on:`, `1:`, `null:`). An empty file is an empty mapping.
    """
    path = Path(path)
    text = _decode(path, _read_bounded(path))
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_expansion(root)
            _check_keys(root, path)
        data = loader.construct_document(root) if root is not None else None
        lines: dict[str, int] = {}
        if isinstance(data, dict):
            _key_lines(root, "", lines)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = "" if isinstance(err, _Refused) else "invalid YAML: "
        raise ConfigError(f"{where}: {what}{err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {str(err)[:300]}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply; a config is a few levels deep") from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1: the top level must be a mapping of sections (model:, tuner:, ...), "
            f"got a {type(data).__name__}"
        )
    return data, lines
