"""Safe YAML loading that remembers where every value was written.

Only plain YAML is accepted: mappings, sequences and the core scalar types (string,
integer, float, boolean, null). Tags that would construct Python objects
(``!!python/object``...), custom tags and ``!!set``/``!!omap``/``!!binary`` are refused.
Duplicate keys in one mapping are an error (plain PyYAML silently keeps the last one).
Anchors and aliases work; merge keys (``<<: *base``) work, and keys written in the mapping
itself win over merged ones.

`parse_yaml` returns the data and a `SourceMap`: for every path into the data (a tuple of
keys and list indices, e.g. ``("sweep", "masks", 2, "window")``) the 1-based line where
that entry was written (the key's line for a mapping entry, the item's line for a list item).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple  # tuple[str | int, ...]

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_MAP_TAG = _CORE + "map"
_SEQ_TAG = _CORE + "seq"
_MERGE_TAG = _CORE + "merge"

_PLAIN = "suites are plain YAML (no tags: nothing that constructs Python objects); remove the tag"

MAX_DEPTH = 64
MAX_NODES = 100_000


class YamlSourceError(Exception):
    """A problem with the YAML text itself; `line` is 1-based, `message` one line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class SourceMap:
    """Path -> 1-based line. Unknown paths fall back to their nearest known ancestor."""

    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def __contains__(self, path: object) -> bool:
        return path in self.lines


def dotted(path: Path) -> str:
    """``("sweep", "masks", 2, "window")`` -> ``sweep.masks[2].window``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


class _Builder:
    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.lines: dict[Path, int] = {}
        self.count = 0
        self.active: set[int] = set()
        self.checked: set[int] = set()

    def build(self, node: Node, path: Path, line: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlSourceError(line, f"document too large (more than {MAX_NODES} values, alias expansion?)")
        if len(path) > MAX_DEPTH:
            raise YamlSourceError(line, f"nesting deeper than {MAX_DEPTH} levels")
        self.lines[path] = line
        if id(node) in self.active:
            raise YamlSourceError(line, "recursive alias (a value that contains itself)")
        node_line = node.start_mark.line + 1
        if isinstance(node, ScalarNode):
            return self._scalar(node, node_line)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    raise YamlSourceError(node_line, f"unsupported YAML tag {_tag_name(node.tag)!r}; {_PLAIN}")
                return [self.build(item, path + (i,), item.start_mark.line + 1) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if node.tag != _MAP_TAG:
                    raise YamlSourceError(node_line, f"unsupported YAML tag {_tag_name(node.tag)!r}; {_PLAIN}")
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise YamlSourceError(node_line, f"unsupported YAML node {type(node).__name__}")  # pragma: no cover

    def _scalar(self, node: ScalarNode, line: int) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise YamlSourceError(
                line, f"unsupported YAML tag {_tag_name(node.tag)!r}; {_PLAIN}"
            )
        if node.tag == _CORE + "timestamp":
            return str(node.value)  # a date is kept as the text that was written
        try:
            value = self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            raise YamlSourceError(line, f"cannot read value {node.value!r}: {_one_line(exc)}") from None
        if isinstance(value, (datetime.date, datetime.datetime)):  # pragma: no cover - defensive
            return str(node.value)
        return value

    def _key(self, node: Node) -> Any:
        line = node.start_mark.line + 1
        if not isinstance(node, ScalarNode):
            raise YamlSourceError(line, "a mapping key must be a plain value, not a list or mapping")
        key = self._scalar(node, line)
        if isinstance(key, float) and key != key:
            raise YamlSourceError(line, "a mapping key cannot be NaN")
        return key

    def _mapping(self, node: MappingNode, path: Path) -> dict:
        # Duplicate keys: among the keys written in this mapping (merged keys may be overridden).
        # (Checked once per node: an alias visits the same, already flattened node again.)
        if id(node) not in self.checked:
            self.checked.add(id(node))
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self._key(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = f"{dotted(path + (key,))}: " if path or isinstance(key, str) else ""
                    raise YamlSourceError(
                        line, f"{where}duplicate key {key!r} (first written on line {seen[key]}); keep only one"
                    )
                seen[key] = line
        try:
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys; explicit keys come last
        except yaml.YAMLError as exc:
            raise YamlSourceError(_mark_line(exc, node.start_mark.line + 1), f"invalid merge key: {_problem(exc)}") from None
        out: dict = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            if key in out:
                del out[key]  # a later (explicit) key replaces a merged one
            out[key] = self.build(value_node, path + (key,), key_node.start_mark.line + 1)
        return out


def _mark_line(exc: BaseException, default: int) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return mark.line + 1
    return default


def _problem(exc: BaseException) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        text = f"{context} ... {problem}" if context and "found" in problem else problem
        return _one_line(text)
    return _one_line(exc) or type(exc).__name__


def parse_yaml(text: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document safely. Raises YamlSourceError (never anything else)."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(0, int(getattr(exc, "position", 0)))) + 1
        raise YamlSourceError(line, f"invalid YAML: {_one_line(exc)}") from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, max(0, int(getattr(exc, "position", 0)))) + 1
            raise YamlSourceError(line, f"invalid YAML: {_one_line(exc)}") from None
        except yaml.YAMLError as exc:
            raise YamlSourceError(_mark_line(exc, 1), f"invalid YAML: {_problem(exc)}") from None
        except RecursionError:
            raise YamlSourceError(1, "invalid YAML: nesting too deep") from None
        if node is None:
            return None, SourceMap({(): 1})
        builder = _Builder(loader)
        start = node.start_mark.line + 1
        try:
            data = builder.build(node, (), start)
        except RecursionError:
            raise YamlSourceError(start, f"nesting deeper than {MAX_DEPTH} levels") from None
        return data, SourceMap(builder.lines)
    finally:
        loader.dispose()
