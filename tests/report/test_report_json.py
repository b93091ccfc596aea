"""The canonical report JSON, written in pieces: the same document whatever the pieces, read back equal."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from controller.report import Report


@pytest.mark.parametrize("items", [0, 1, 7, 2500])
def test_json_chunks_make_one_canonical_document(make_report: Callable[..., Report], items: int) -> None:
    report = make_report(items)
    text = b"".join(report.json_chunks()).decode()
    for per_chunk in (1, 3, 1000):
        assert b"".join(report.json_chunks(items_per_chunk=per_chunk)).decode() == text
    document = json.loads(text)
    keys = list(document)
    assert keys[0] == "schema" and keys[-1] == "items"
    assert [item["key"] for item in document["items"]] == [item.key for item in report.items]
    assert Report.from_json(text) == report
    # One item per line, so that a report can be read (and grepped) item by item.
    item_lines = [line for line in text.splitlines() if line.startswith('{"key":')]
    assert len(item_lines) == items


def test_large_reports_stream_in_bounded_pieces(make_report: Callable[..., Report]) -> None:
    report = make_report(2500)
    sizes = [len(chunk) for chunk in report.json_chunks(items_per_chunk=500)]
    assert len(sizes) == 2 + 5  # head, five pieces of 500 items, tail
    assert max(sizes) < sum(sizes) / 4
