"""Packed executions give every item the same outcome as running it alone (issue: packed mode).

The same 200-item batch runs twice on the emulator, packed and one execution per item; per item the
state, exit code, attempts and log tail must agree. Job output names the task index it ran as, which
legitimately differs between the modes (task 117 of a packed execution vs task 0 of its own), so tails are
compared with that one token normalised. A timed-out item's tail is whatever it printed before its timeout
struck, which depends on how fast the machine started it, so only its lines' shape is compared.
"""

from __future__ import annotations

import re
import tempfile
from typing import Any

import pytest
from testenv import PROJECT, REGION

from controller.batch import PollPolicy
from controller.catalog import Catalog
from controller.clients import Clients
from controller.flow import Options, execute
from controller.plan import Mode
from controller.quota import Rates
from controller.report import ItemResult, ItemState, Report
from controller.spec import load_batch
from controller.store import LocalStore

pytestmark = pytest.mark.slow

TASK_TOKEN = re.compile(r"\btask \d+\b")


# Four periods of the 50-item pattern: every kind of item, and 120 hello items, so the packed hello launch
# spans two manifest chunks (MANIFEST_CHUNK = 100) and tasks past index 100 read the second one.
ITEMS = 200


def spec(batch_id: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for i in range(ITEMS):
        kind = i % 50
        if kind < 30:
            items.append({"key": f"hello-{i}", "job": "hello", "args": [f"n{i}"]})
        elif kind < 40:
            items.append({"key": f"exit-{i}", "job": "flaky", "args": ["--exit-code", str(1 + i % 5)]})
        elif kind < 45:
            items.append({"key": f"retry-{i}", "job": "flaky", "args": ["--fail-attempts", "1"]})
        elif kind < 49:
            items.append({"key": f"missing-{i}", "job": "wordcount", "args": [f"/nonexistent/{i}"]})
        else:
            items.append({"key": f"slow-{i}", "job": "flaky", "args": ["--sleep", "30"], "timeout": "2s"})
    return {"batch_id": batch_id, "items": items}


def run(catalog: Catalog, clients: Clients, mode: Mode) -> Report:
    batch = load_batch(spec(f"equiv-{mode.value}"), catalog)
    options = Options(
        project=PROJECT,
        region=REGION,
        report_to="unused",
        concurrency=32,
        mode=mode,
        rates=Rates.unlimited(),
        poll=PollPolicy(fastest=0.3, slowest=1.0),
    )
    store = LocalStore(tempfile.mkdtemp(prefix="fanout-equiv-"))
    report, _url = execute(batch, catalog, options, clients=clients, store=store, use_prefect_tasks=False)
    return report


TIMED_OUT_LINE = re.compile(r"flaky: task N attempt [01] starting")


def outcome(report: Report) -> dict[str, tuple[Any, ...]]:
    def tail(item: ItemResult) -> tuple[str, ...]:
        lines = tuple(TASK_TOKEN.sub("task N", line) for line in item.log_tail or ())
        if item.state is ItemState.TIMED_OUT:
            assert all(TIMED_OUT_LINE.fullmatch(line) for line in lines), (item.key, lines)
            return ()
        return lines

    return {item.key: (item.state, item.exit_code, item.attempts, tail(item)) for item in report.items}


def test_packed_and_per_item_reports_agree(catalog: Catalog, clients: Clients) -> None:
    packed = run(catalog, clients, Mode.PACKED)
    single = run(catalog, clients, Mode.PER_ITEM)

    assert len(packed.launches) == 4  # hello, flaky, flaky with a 2 s timeout, wordcount
    assert len(single.launches) == ITEMS
    assert outcome(packed) == outcome(single)
    counts = packed.summary.by_state
    assert (counts[ItemState.SUCCEEDED], counts[ItemState.FAILED], counts[ItemState.TIMED_OUT]) == (140, 56, 4)
    # A timed-out item may have been stopped before it printed anything; every other failure printed.
    failed = [item for item in packed.items if item.state is ItemState.FAILED]
    assert all(item.log_tail for item in failed), "every failed item carries its output"
    exit_item = next(item for item in packed.items if item.key == "exit-30")
    assert exit_item.exit_code == 1
    assert exit_item.log_tail == [
        f"flaky: task {exit_item.task_index} attempt 0 starting",
        "flaky: attempt 0 failing with exit code 1",
        f"flaky: task {exit_item.task_index} attempt 1 starting",
        "flaky: attempt 1 failing with exit code 1",
    ]
