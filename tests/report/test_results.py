"""Item results gathered from ``<batch>/results/``: in a local folder and on fake-gcs-server through
google-cloud-storage, then streamed back from ``results.jsonl`` by ``read_results``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testenv import BUCKET

from controller.redact import MASK, Redactor
from controller.report import ItemResult, ItemState
from controller.results import (
    INLINE_MAX_BYTES,
    JSONL,
    MAX_BYTES,
    MAX_DEPTH,
    collect_results,
    jsonl_chunks,
    read_results,
    result_name,
)
from controller.store import GcsStore, LocalStore, Store, StoreError

SECRET = "hunter2-very-secret"


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.emulator)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path)
    return GcsStore(request.getfixturevalue("gcs"), BUCKET, f"results-{tmp_path.name}")


def _item(key: str, index: int, state: ItemState = ItemState.SUCCEEDED, reason: str | None = None) -> ItemResult:
    return ItemResult(key=key, index=index, job="j", state=state, reason=reason)


def _put(store: Store, key: str, task: int, data: bytes) -> None:
    store.write("b", result_name(key, task), data)


def test_results_are_gathered_by_item_and_task_and_read_back_in_spec_order(store: Store, gcs: Any) -> None:
    big = {"rows": ["x" * 100] * (INLINE_MAX_BYTES // 100)}  # just over 64 KiB
    _put(store, "small", 0, b'{"count": 3}')
    _put(store, "dir/with/slashes", 0, b"[1, 2]")
    _put(store, "tasks", 0, b'"zero"')
    _put(store, "tasks", 2, b'"two"')
    _put(store, "big", 0, json.dumps(big).encode())
    _put(store, "failed", 0, b"false")
    items = [
        _item("small", 0),
        _item("nothing", 1),
        _item("dir/with/slashes", 2),
        _item("tasks", 3),
        _item("big", 4),
        _item("failed", 5, ItemState.FAILED, "task 0 exited with code 1 after 1 attempt"),
    ]

    got = collect_results(store, "b", items, {"tasks": 3}, Redactor())

    assert [i.key for i in got] == [i.key for i in items]
    by_key = {i.key: i for i in got}
    assert by_key["small"].result == {"count": 3} and by_key["small"].result_uri is None
    assert by_key["nothing"].result is None
    assert by_key["dir/with/slashes"].result == [1, 2]
    assert by_key["tasks"].result == ["zero", None, "two"]  # a list by task index, null where none was written
    assert by_key["big"].result is None
    assert by_key["big"].result_uri == store.url("b", "results/big/0.json")
    assert by_key["failed"].result is False and by_key["failed"].reason == items[5].reason

    store.write("b", JSONL, jsonl_chunks(got))
    client = gcs if isinstance(store, GcsStore) else None
    records = list(read_results(store.url("b"), client))
    assert [(r.key, r.state, r.result) for r in records] == [
        ("small", ItemState.SUCCEEDED, {"count": 3}),
        ("nothing", ItemState.SUCCEEDED, None),
        ("dir/with/slashes", ItemState.SUCCEEDED, [1, 2]),
        ("tasks", ItemState.SUCCEEDED, ["zero", None, "two"]),
        ("big", ItemState.SUCCEEDED, big),  # fetched from its result_uri as its record comes
        ("failed", ItemState.FAILED, False),
    ]
    line = json.loads((store.read("b", JSONL) or b"").splitlines()[4])
    assert line == {"key": "big", "state": "succeeded", "result": None, "result_uri": by_key["big"].result_uri}
    assert [r.result for r in read_results(store.url("b"), client, fetch=False)][4] is None


def test_invalid_and_oversized_results_are_refused_with_a_reason(store: Store) -> None:
    _put(store, "invalid", 0, b"{not json")
    _put(store, "nan", 0, b"[NaN]")  # Python reads it, JSON does not have it
    _put(store, "huge", 0, b'"' + b"x" * MAX_BYTES + b'"')
    _put(store, "multi", 1, b"{")
    items = [_item("invalid", 0), _item("nan", 1), _item("huge", 2), _item("multi", 3)]

    got = {i.key: i for i in collect_results(store, "b", items, {"multi": 2}, Redactor())}

    assert got["invalid"].result is None and got["invalid"].result_uri is None
    assert got["invalid"].reason is not None and "results/invalid/0.json is not JSON" in got["invalid"].reason
    assert got["nan"].reason is not None and "is not JSON" in got["nan"].reason
    huge = got["huge"]
    assert huge.result is None and huge.result_uri is None
    assert huge.reason is not None and f"over the limit of {MAX_BYTES}" in huge.reason
    assert got["multi"].result == [None, None]
    assert got["multi"].reason is not None and got["multi"].reason.startswith("task 1: result refused")
    assert all(i.state is ItemState.SUCCEEDED for i in got.values())  # the program's outcome stands


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"s": "\\ud800"}', "holds a lone surrogate"),
        (b'{"\\udfff": 1}', "holds a lone surrogate"),
        (b"[" * 900 + b"]" * 900, f"is nested deeper than {MAX_DEPTH} levels"),
        (b"1e400", "1e400 is out of the range of a JSON number"),
        (b"[-1e999]", "-1e999 is out of the range of a JSON number"),
        (b"-Infinity", "-Infinity is not JSON"),
    ],
)
def test_a_value_no_report_can_hold_is_refused_and_the_others_kept(store: Store, data: bytes, reason: str) -> None:
    _put(store, "bad", 0, data)
    _put(store, "good", 0, b'{"ok": [1.5, "\\u00e9"]}')
    _put(store, "limit", 0, b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)

    items = [_item("bad", 0), _item("good", 1), _item("limit", 2)]

    got = {i.key: i for i in collect_results(store, "b", items, {}, Redactor())}

    assert got["bad"].result is None and got["bad"].reason is not None and reason in got["bad"].reason
    assert got["good"].result == {"ok": [1.5, "\u00e9"]} and got["good"].reason is None
    assert got["limit"].reason is None  # MAX_DEPTH levels are kept
    for line in b"".join(jsonl_chunks(got.values())).splitlines():  # strict JSON, UTF-8, line by line
        json.loads(line.decode("utf-8"), parse_constant=lambda name: pytest.fail(f"{name} in results.jsonl"))


def test_a_literal_secret_in_a_result_is_masked_inline_and_where_it_lies(store: Store) -> None:
    _put(store, "inline", 0, json.dumps({"token": SECRET, SECRET: [f"Bearer {SECRET}"]}).encode())
    _put(store, "large", 0, json.dumps({"token": SECRET, "pad": "p" * INLINE_MAX_BYTES}).encode())
    items = [_item("inline", 0), _item("large", 1)]

    got = collect_results(store, "b", items, {}, Redactor([SECRET]))

    assert got[0].result == {"token": MASK, MASK: [f"Bearer {MASK}"]}
    stored = store.read("b", "results/large/0.json") or b""
    assert SECRET.encode() not in stored and json.loads(stored)["token"] == MASK
    # An inline value's object stays beside the report too: masked there as in the report.
    assert json.loads(store.read("b", "results/inline/0.json") or b"") == {"token": MASK, MASK: [f"Bearer {MASK}"]}
    assert SECRET not in b"".join(jsonl_chunks(got)).decode()


def test_no_results_folder_leaves_items_as_they_are(store: Store) -> None:
    items = [_item("a", 0)]
    assert collect_results(store, "b", items, {}, Redactor()) is items


def test_read_results_names_the_line_that_is_not_a_record_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / JSONL).write_text('{"key": "a", "state": "succeeded", "result": 1}\n{"key": "b", "state": "odd"}\n')
    records = read_results(str(tmp_path))
    assert next(records).result == 1
    with pytest.raises(StoreError, match=r"results.jsonl line 2 is not a result record"):
        next(records)
    with pytest.raises(StoreError, match="cannot read"):
        next(read_results(str(tmp_path / "missing")))
