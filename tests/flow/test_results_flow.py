"""Item results end to end: wordcount returns its counts through ``$FANOUT_RESULT_FILE``, the runner stores
them, the flow gathers them into report.json and results.jsonl (a real Prefect flow run, the Cloud Run
emulator, fake-gcs-server)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from testenv import BUCKET

from controller.report import ItemState, Report
from controller.results import read_results

Run = Callable[..., tuple[dict[str, Any], Report]]


def counts(text: str) -> dict[str, Any]:
    source = "data:," + quote(text)
    data = text.encode()
    return {
        "source": source,
        "lines": data.count(b"\n"),
        "words": len(data.split()),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def spec(batch_id: str, texts: list[str]) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"key": f"doc/{n}", "job": "wordcount", "args": ["data:," + quote(text)]} for n, text in enumerate(texts)
    ]
    items.append({"key": "missing", "job": "wordcount", "args": ["/nonexistent/input.txt"]})
    return {"batch_id": batch_id, "items": items}


@pytest.mark.parametrize("mode", ["packed", "per-item"])
def test_wordcount_returns_its_counts_into_the_report_and_results_jsonl(run_flow: Run, gcs: Any, mode: str) -> None:
    texts = ["one two three\n", "a\nb\n", "x"]

    _summary, report = run_flow(spec(f"it-results-{mode}", texts), mode=mode)

    assert [(i.key, i.state) for i in report.items][-1] == ("missing", ItemState.FAILED)
    assert [i.result for i in report.items] == [*(counts(t) for t in texts), None]
    records = list(read_results(f"gs://{BUCKET}/flow-tests/it-results-{mode}", gcs))
    assert [(r.key, r.state, r.result) for r in records] == [(i.key, i.state, i.result) for i in report.items]
