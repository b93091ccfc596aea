"""Stop early (``max_failures``): a batch of 200 items that all fail stops after the first launches' worth of
tasks instead of running all 200, and says why; every item is in the report, the ones never launched with the
reason. Real Prefect flow runs on the Cloud Run emulator, reports in fake-gcs-server, executions counted
through the official client."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from testenv import PROJECT, REGION

from cloudrun_emulator import Emulator
from controller.report import BatchStatus, ItemState, Report

Run = Callable[..., tuple[dict[str, Any], Report]]
ITEMS = 200
CAP = 10  # tasks running at once: packed launches of 10 tasks, one after the other


def _spec(batch_id: str, **fields: Any) -> dict[str, Any]:
    items = [{"key": f"broken-{n:03d}", "job": "flaky", "args": ["--exit-code", "3"]} for n in range(ITEMS)]
    return {"batch_id": batch_id, "items": items, **fields}


def _tasks_started(emulator: Emulator, batch_id: str) -> int:
    """Tasks the batch's executions ran, as Cloud Run lists them."""
    client = run_v2.ExecutionsClient(
        credentials=AnonymousCredentials(), transport="rest", client_options=ClientOptions(api_endpoint=emulator.url)
    )
    total = 0
    for execution in client.list_executions(parent=f"projects/{PROJECT}/locations/{REGION}/jobs/flaky"):
        env = {e.name: e.value for c in execution.template.containers for e in c.env}
        if env.get("FANOUT_BATCH_ID") == batch_id:
            total += execution.succeeded_count + execution.failed_count + execution.cancelled_count
    return total


@pytest.mark.parametrize(
    ("action", "limit", "mode"), [("cancel", 10, "auto"), ("finish", "5%", "auto"), ("cancel", 10, "per-item")]
)
def test_200_failing_items_stop_after_10_failures(
    run_flow: Run, emulator: Emulator, action: str, limit: Any, mode: str
) -> None:
    batch_id = f"stop-early-{action}-{mode}"
    # The spec's rule, or the same rule as a flow parameter (a share: 5% of 200 is 10).
    spec = _spec(batch_id, max_failures=limit, on_max_failures=action) if action == "cancel" else _spec(batch_id)
    params = {} if action == "cancel" else {"max_failures": limit, "on_max_failures": action}
    summary, report = run_flow(spec, max_running_tasks=CAP, mode=mode, **params)
    assert summary["stopped"] == report.stopped

    # The poll that sees the limit reached may see a few more (per item, a launch can start as a task ends).
    assert report.stopped is not None
    assert re.fullmatch(r"stopped early: 1\d items failed, the limit is 10 \(max_failures\)", report.stopped)
    assert report.status is BatchStatus.FAILED
    assert any("stopped early" in problem for problem in report.problems)
    # Every item is in the report, each with a terminal state and, where it never ran, the reason.
    assert len(report.items) == ITEMS
    by_state = report.summary.by_state
    assert by_state[ItemState.FAILED] >= 10
    assert by_state[ItemState.NOT_LAUNCHED] >= ITEMS - 3 * CAP
    never = [item for item in report.items if item.state is ItemState.NOT_LAUNCHED]
    assert {item.reason for item in never} == {f"not launched: the batch {report.stopped}"}
    # A few launches' worth of tasks ran, not 200.
    started = _tasks_started(emulator, batch_id)
    assert 10 <= started <= 3 * CAP, started
    if action == "finish":
        assert by_state[ItemState.CANCELLED] == 0
