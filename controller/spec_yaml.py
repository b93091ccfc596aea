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
_STR_TAG = yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG
_KEY_TYPES = (str, int, float, bool, type(None))
_ALIAS_PROBLEM = "YAML aliases (*name) are not allowed in batch specs"


def _refuse(problem: str, event: Any) -> ConstructorError:
    return ConstructorError(None, None, problem, event.start_mark)


class _Walk:
    """One pass over the events of one document; ``lines`` (when given) receives path -> 1-based line.

    A 100,000-item spec is about a million events, so the common ones take a short path: a scalar that is a
    string as written (quoted, or plain and starting with a character no implicit type starts with) is
    taken as it is in the loop of the mapping or sequence that holds it, with no node and no constructor.
    """

    def __init__(self, text: str, lines: dict[_Path, int] | None) -> None:
        self._loader = _Loader(text)
        self._next = self._loader.get_event
        self._lines = lines
        self._plain: dict[str, Any] = {}
        # First character ("" for the empty scalar) -> the implicit resolvers that may type a plain scalar
        # starting with it, in the order BaseResolver.resolve tries them. The safe loader's resolvers all
        # name their first characters; a plain scalar that none of its character's resolvers match is a str.
        self._resolvers: dict[str, list[tuple[str, Any]]] = dict(self._loader.yaml_implicit_resolvers)
        self._typed_first = frozenset(self._resolvers)

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
            return self._sequence(path)
        raise _refuse(_ALIAS_PROBLEM, event)

    def _sequence(self, path: _Path) -> list[Any]:
        items: list[Any] = []
        nxt, scalar, typed, tracked = self._next, yaml.ScalarEvent, self._typed_first, self._lines is not None
        while (kind := type(event := nxt())) is not yaml.SequenceEndEvent:
            if kind is not scalar or tracked:
                items.append(self._node(event, (*path, len(items)) if tracked else path))
            elif event.tag is None and (not event.implicit[0] or event.value[:1] not in typed):
                items.append(event.value)  # a string as written
            else:
                items.append(self._scalar(event))
        return items

    def _mapping(self, path: _Path) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        nxt, scalar, typed, tracked = self._next, yaml.ScalarEvent, self._typed_first, self._lines is not None
        while (kind := type(key_event := nxt())) is not yaml.MappingEndEvent:
            if kind is not scalar:
                problem = _ALIAS_PROBLEM if kind is yaml.AliasEvent else "mapping keys must be plain strings"
                raise _refuse(problem, key_event)
            key = key_event.value
            if key_event.tag is not None or (key_event.implicit[0] and key[:1] in typed):
                key = self._key(key_event)
            if key in mapping:
                raise _refuse(f"duplicate key {key!r}", key_event)
            event = nxt()
            if type(event) is not scalar or tracked:
                mapping[key] = self._node(event, (*path, key_event.value) if tracked else path)
            elif event.tag is None and (not event.implicit[0] or event.value[:1] not in typed):
                mapping[key] = event.value  # a string as written
            else:
                mapping[key] = self._scalar(event)
        return mapping

    def _key(self, event: Any) -> Any:
        """A key that is not a string as written: a merge key is refused, other keys must be plain data."""
        if self._tag(event) == _MERGE_TAG:
            raise _refuse("YAML merge keys (<<) are not allowed in batch specs", event)
        key = self._scalar(event)
        if not isinstance(key, _KEY_TYPES):
            raise _refuse("mapping keys must be plain strings", event)
        return key

    def _collection_tag(self, event: Any, default: str) -> None:
        if event.tag not in (None, "!", default):
            raise _refuse(f"YAML tag {event.tag!r} is not allowed in batch specs", event)

    def _tag(self, event: Any) -> str:
        value: str = event.value
        if event.tag is None:
            if not event.implicit[0]:
                return _STR_TAG  # quoted, or a block
            for tag, regexp in self._resolvers.get(value[:1], ()):
                if regexp.match(value):
                    return str(tag)
            return _STR_TAG
        if event.tag == "!":
            return str(self._loader.resolve(yaml.ScalarNode, value, event.implicit))
        return str(event.tag)

    def _scalar(self, event: Any) -> Any:
        value: str = event.value
        plain = event.tag is None and event.implicit[0]
        if plain and value in self._plain:
            return self._plain[value]
        tag = self._tag(event)
        if tag == _STR_TAG:
            return value
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
        constructed = self._loader.construct_object(node)
        self._loader.constructed_objects.pop(node, None)
        if plain:
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
