"""Results no report can hold as they are: a lone surrogate, nesting deeper than any parser reads back, numbers
out of JSON's range. Each costs its own item's result, with a reason; every other item, report.json,
results.jsonl and report.html are written, and running the batch again works (a real Prefect flow run on the
Cloud Run emulator, the report in fake-gcs-server)."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from typing import Any

from testenv import BUCKET

from controller.redact import MASK
from controller.report import ItemState, Report
from controller.results import MAX_DEPTH, read_results

Run = Callable[..., tuple[dict[str, Any], Report]]

# The item's program writes its argument to $FANOUT_RESULT_FILE byte for byte, valid JSON or not, with "@"
# replaced by its env var TOKEN (a literal secret, so the spec never holds it in clear).
WRITE_RAW = (
    "import os, sys; open(os.environ['FANOUT_RESULT_FILE'], 'w')"
    ".write(sys.argv[1].replace('@', os.environ.get('TOKEN', '@')))"
)

HOSTILE = {
    "surrogate": '{"s": "\\ud800"}',  # json.loads takes it; no UTF-8 text can hold the string it makes
    "deep": "[" * 900 + "]" * 900,  # json.loads takes it; the scrubber recursed, the report parser stops at ~200
    "huge-number": "1e400",  # a float's infinity, written back as Infinity
    "infinity": "[Infinity]",
    "nan": '{"x": NaN}',
}


def one_off(key: str, value: str, **fields: Any) -> dict[str, Any]:
    command = [sys.executable, "-c", WRITE_RAW, value]
    return {"key": key, "image": "example.com/no-runner:1", "command": command, **fields}


def test_a_result_no_report_can_hold_costs_only_its_own_item(run_flow: Run, gcs: Any) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    items = [
        one_off("good", '{"answer": 42}'),
        *(one_off(key, value) for key, value in HOSTILE.items()),
        one_off("leaks", '{"token": "@"}', env={"TOKEN": {"value": canary}}),
        one_off("leaks-not-json", '{"token": "@"', env={"TOKEN": {"value": canary}}),
    ]
    batch = {"batch_id": "hostile-results", "items": items}

    summary, report = run_flow(batch)

    assert summary["succeeded"] == len(items)
    by_key = {item.key: item for item in report.items}
    assert by_key["good"].result == {"answer": 42} and by_key["good"].reason is None
    assert by_key["leaks"].result == {"token": MASK}
    for key in HOSTILE:
        item = by_key[key]
        assert item.state is ItemState.SUCCEEDED and item.result is None, key
        assert item.reason is not None and item.reason.startswith("result refused:"), (key, item.reason)
    assert "lone surrogate" in (by_key["surrogate"].reason or "")
    assert f"nested deeper than {MAX_DEPTH} levels" in (by_key["deep"].reason or "")
    assert "1e400 is out of the range of a JSON number" in (by_key["huge-number"].reason or "")
    assert "Infinity is not JSON" in (by_key["infinity"].reason or "")
    assert "NaN is not JSON" in (by_key["nan"].reason or "")

    folder = gcs.bucket(BUCKET)
    stored = {
        name: folder.blob(f"flow-tests/hostile-results/{name}").download_as_bytes()
        for name in ("report.json", "report.html", "results.jsonl")
    }
    # results.jsonl is strict JSON, line by line: no Infinity, no NaN, nothing a strict parser refuses.
    for line in stored["results.jsonl"].splitlines():
        json.loads(line, parse_constant=lambda name: pytest_fail(f"{name} in results.jsonl"))
    records = list(read_results("gs://" + BUCKET + "/flow-tests/hostile-results", gcs))
    assert [(r.key, r.result) for r in records] == [(i.key, i.result) for i in report.items]
    # The literal secret is masked in every file beside the report, the result objects included.
    for blob in gcs.list_blobs(BUCKET, prefix="flow-tests/hostile-results/"):
        assert canary.encode() not in blob.download_as_bytes(), blob.name

    again, rerun = run_flow(batch)  # the stored report reads back: the batch is found finished
    assert again["succeeded"] == len(items) and [i.result for i in rerun.items] == [i.result for i in report.items]


def pytest_fail(message: str) -> Any:
    raise AssertionError(message)
