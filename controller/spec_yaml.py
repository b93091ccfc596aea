"""YAML specs read straight from libyaml's event stream into plain data.

PyYAML's loader composes a node graph and then constructs Python objects from it in pure Python, which
took 20 s of CPU for a 100,000-item spec. Here the parser's events (libyaml's C parser when PyYAML has it)
become dicts, lists and scalars in one pass, with the same safe rules the spec loader always had: no
aliases (how "billion laughs" bombs exhaust memory), no merge keys, no duplicate keys, mapping keys that
are plain scalars, one document. Scalars resolve and construct exactly as in ``yaml.SafeLoader``: the
common plain and quoted strings take a short path, everything else goes through the safe constructor.

Every refusal is a ``yaml.MarkedYAMLError`` with the place (line, column) in the text, as the parser's own
errors are. ``walk`` can also record where each path of the document starts, for error messages
(``controller.spec_lines``).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Path = tuple[str | int, ...]
# Events are typed loosely (Any): libyaml's marks are not the stubs' yaml.error.Mark.

_MAP_TAG = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG
_SEQ_TAG = yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG
_MERGE_TAG = "tag:yaml.org,2002:merge"
_KEY_TYPES = (str, int, float, bool, type(None))


def _refuse(problem: str, event: Any) -> ConstructorError:
    return ConstructorError(None, None, problem, event.start_mark)


class _Walk:
    """One pass over the events of one document; ``lines`` (when given) receives path -> 1-based line."""

    def __init__(self, text: str, lines: dict[_Path, int] | None) -> None:
        self._loader = _Loader(text)
        self._next = self._loader.get_event
        self._lines = lines
        self._plain: dict[str, Any] = {}
        self._resolved_first = frozenset(k for k in self._loader.yaml_implicit_resolvers if k)

    def document(self) -> Any:
        self._next()  # StreamStartEvent
        start = self._next()
        if isinstance(start, yaml.StreamEndEvent):
            return None
        root = self._node(self._next(), ())
        self._next()  # DocumentEndEvent
        extra = self._next()
        if not isinstance(extra, yaml.StreamEndEvent):
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                start.start_mark,
                "but found another document",
                extra.start_mark,
            )
        self._loader.dispose()
        return root

    def _node(self, event: Any, path: _Path) -> Any:
        if self._lines is not None:
            self._lines[path] = event.start_mark.line + 1  # a mapping entry's value, as the composer placed it
        kind = type(event)
        if kind is yaml.ScalarEvent:
            return self._scalar(event)
        if kind is yaml.MappingStartEvent:
            self._collection_tag(event, _MAP_TAG)
            return self._mapping(path)
        if kind is yaml.SequenceStartEvent:
            self._collection_tag(event, _SEQ_TAG)
            items: list[Any] = []
            while type(child := self._next()) is not yaml.SequenceEndEvent:
                items.append(self._node(child, (*path, len(items)) if self._lines is not None else path))
            return items
        raise _refuse("YAML aliases (*name) are not allowed in batch specs", event)

    def _mapping(self, path: _Path) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        while type(key_event := self._next()) is not yaml.MappingEndEvent:
            if type(key_event) is yaml.AliasEvent:
                raise _refuse("YAML aliases (*name) are not allowed in batch specs", key_event)
            if type(key_event) is not yaml.ScalarEvent:
                raise _refuse("mapping keys must be plain strings", key_event)
            if (key_event.value == "<<" or key_event.tag is not None) and self._tag(key_event) == _MERGE_TAG:
                raise _refuse("YAML merge keys (<<) are not allowed in batch specs", key_event)
            key = self._scalar(key_event)
            if not isinstance(key, _KEY_TYPES):
                raise _refuse("mapping keys must be plain strings", key_event)
            if key in mapping:
                raise _refuse(f"duplicate key {key!r}", key_event)
            child = (*path, key_event.value) if self._lines is not None else path
            mapping[key] = self._node(self._next(), child)
        return mapping

    def _collection_tag(self, event: Any, default: str) -> None:
        if event.tag not in (None, "!", default):
            raise _refuse(f"YAML tag {event.tag!r} is not allowed in batch specs", event)

    def _tag(self, event: Any) -> str:
        if event.tag is None or event.tag == "!":
            return str(self._loader.resolve(yaml.ScalarNode, event.value, event.implicit))
        return str(event.tag)

    def _scalar(self, event: Any) -> Any:
        value: str = event.value
        if event.tag is None:
            if not event.implicit[0]:
                return value  # quoted or a block: a string
            if value and value[0] not in self._resolved_first:
                return value  # plain, and no implicit type (number, bool, null, date) starts with this
            if value in self._plain:
                return self._plain[value]
        node = yaml.ScalarNode(self._tag(event), value, event.start_mark, event.end_mark, event.style)
        constructed = self._loader.construct_object(node)
        self._loader.constructed_objects.pop(node, None)
        if event.tag is None:
            # A plain scalar's type depends on its text alone (YAML 1.1 implicit resolution): construct once.
            self._plain[value] = constructed
        return constructed


def load(text: str) -> Any:
    """The document in ``text`` as plain data; raises ``yaml.YAMLError`` (marked with the place) if it
    is not YAML or breaks a rule above."""
    return _Walk(text, None).document()


def walk_lines(text: str) -> dict[_Path, int]:
    """Where each path of the document starts (1-based lines); a mapping entry's line is its value's."""
    lines: dict[_Path, int] = {}
    _Walk(text, lines).document()
    return lines


__all__ = ["load", "walk_lines"]
