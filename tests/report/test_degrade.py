"""Degrade, never destroy: a value no JSON document can hold, wherever in an item it comes from, costs that
item's field (with a reason), never the report, results.jsonl or report.html; a launch whose cost cannot be
counted keeps its outcome."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from controller.batchfolder import open_report, store_report
from controller.html_report import render_html_chunks
from controller.logs import TailTarget, fetch_tails
from controller.quota import Unlimited
from controller.redact import payload_text
from controller.report import Report
from controller.results import jsonl_chunks
from controller.store import LocalStore


def _strict(line: bytes) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(line.decode("utf-8"), parse_constant=refuse)


def test_an_item_field_no_json_can_hold_is_left_out_with_a_reason(
    make_report: Callable[..., Report], tmp_path: Path
) -> None:
    report = make_report(3)
    deep: object = []
    for _ in range(300):  # past the serializer's depth limit
        deep = [deep]
    bad = dataclasses.replace(
        report.items[1], log_tail=["ok", "lone \ud800 surrogate"], result=deep, reason="failed \udfff"
    )
    nan = dataclasses.replace(report.items[2], result=float("nan"))
    report = report.model_copy(update={"items": [report.items[0], bad, nan]})

    store_report(LocalStore(tmp_path), report)
    back = open_report(str(tmp_path / report.batch_id)).report

    assert back.items[0] == report.items[0]  # the others whole
    kept = back.items[1]
    assert kept.key == bad.key and kept.state is bad.state and kept.log_tail is None and kept.result is None
    assert kept.reason is not None and kept.reason.startswith("not in the report, no JSON document can hold it: ")
    assert all(f"{name} (" in kept.reason for name in ("reason", "log_tail", "result"))
    lines = b"".join(jsonl_chunks(report.items)).splitlines()
    records = [_strict(line) for line in lines]  # strict JSON on every line: NaN written as null
    assert [record["key"] for record in records] == [item.key for item in report.items]  # type: ignore[index]
    assert records[2]["result"] is None  # type: ignore[index]
    assert b"".join(render_html_chunks(report)).startswith(b"<!DOCTYPE html>")


def test_a_log_line_with_a_lone_surrogate_reads_as_a_replacement_character() -> None:
    assert payload_text("a \ud800 b") == "a \ufffd b"
    assert payload_text({"message": "\udfff"}) == "\ufffd"
    assert payload_text({"data": "\ud800"}) == '{"data": "\ufffd"}'
    assert payload_text("\U0001f600 fine") == "\U0001f600 fine"  # a real character outside the BMP stays


class _OddEntries:
    """Cloud Logging's list_entries with entries nobody foresaw among good ones (newest first)."""

    def list_entries(self, **_: object) -> object:
        execution = {"run.googleapis.com/execution_name": "exec-1"}
        return iter(
            [
                SimpleNamespace(payload="last \ud800 line", labels=execution),
                SimpleNamespace(payload="odd index", labels={**execution, "run.googleapis.com/task_index": "x"}),
                SimpleNamespace(payload="no labels at all", labels=["not", "a", "mapping"]),
                SimpleNamespace(payload="first line", labels=execution),
            ]
        )


def test_an_odd_log_entry_costs_its_line_not_every_tail() -> None:
    target = TailTarget(key="item", execution="exec-1", task_index=None)
    tails, stats = fetch_tails(_OddEntries(), "p", [target], limiter=Unlimited())
    assert tails["item"].fields()["log_tail"] == ["first line", "odd index", "last \ufffd line"]
    assert stats.unreadable == 1


def test_a_problem_or_launch_error_reads_a_lone_surrogate_as_a_replacement_character() -> None:
    from controller.redact import as_text  # what the runner's problems and the launches' errors pass

    assert as_text("Cloud Run said \udc80") == "Cloud Run said \ufffd"
    assert as_text("fine \u00e9 \U0001f600") == "fine \u00e9 \U0001f600"
