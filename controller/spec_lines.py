"""Where things are in a spec's text: a map of document paths to line numbers, for error messages.

Built from the text only when an error needs a line (``LazyLines``): composing a 100,000-item spec takes
time that a valid spec should not pay.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import yaml

# libyaml's composer: the pure-Python one took 2 minutes on a 100,000-item spec.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def line_index(text: str) -> dict[tuple[str | int, ...], int]:
    """Map of paths in a YAML/JSON document to 1-based line numbers, for error locations."""
    if "\n" not in text.rstrip():
        return {(): 1}  # one line (compact JSON): everything is on it, and composing 100,000 items takes long
    try:
        root = yaml.compose(text, Loader=_BaseLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str | int, ...], int] = {}
    stack: list[tuple[tuple[str | int, ...], yaml.Node]] = [((), root)] if root is not None else []
    while stack:
        path, node = stack.pop()
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    child = (*path, key_node.value)
                    lines[child] = key_node.start_mark.line + 1
                    stack.append((child, value_node))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(((*path, i), child) for i, child in enumerate(node.value))
    return lines


class LazyLines(Mapping[tuple[str | int, ...], int]):
    """Path -> line index, built from the source text only if an error needs it."""

    def __init__(self, text: str | None) -> None:
        self._text = text
        self._index: dict[tuple[str | int, ...], int] | None = None

    def _built(self) -> dict[tuple[str | int, ...], int]:
        if self._index is None:
            small = self._text is not None and len(self._text) < 8 * 1024 * 1024
            self._index = line_index(self._text) if small and self._text else {}
        return self._index

    def __getitem__(self, key: tuple[str | int, ...]) -> int:
        return self._built()[key]

    def __iter__(self) -> Iterator[tuple[str | int, ...]]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())


def line_of(lines: Mapping[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    """The line of ``loc``, else of the nearest enclosing path that has one."""
    for end in range(len(loc), -1, -1):
        if (line := lines.get(loc[:end])) is not None:
            return line
    return None


__all__ = ["LazyLines", "line_index", "line_of"]
