"""Where things are in a spec's text: a map of document paths to line numbers, for error messages.

Built from the text only when an error needs a line (``LazyLines``): walking a 100,000-item spec's events
takes time that a valid spec should not pay.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import yaml

from controller.spec_yaml import walk_lines


def line_index(text: str) -> dict[tuple[str | int, ...], int]:
    """Map of paths in a YAML/JSON document to 1-based line numbers, for error locations."""
    if "\n" not in text.rstrip():
        return {(): 1}  # one line (compact JSON): everything is on it
    try:
        return walk_lines(text)
    except (yaml.YAMLError, RecursionError):
        return {}


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
