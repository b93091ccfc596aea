"""How an interim report (stored as the batch is interrupted, before its cancellation) reads each launch:
only what ended and was read reads as it ended; nothing reads as cancelled, since no cancellation was
confirmed yet."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from controller.batch import LaunchState
from controller.catalog import Catalog
from controller.cloudrun import ExecutionOutcome, ExecutionStatus, TaskStatus
from controller.outcomes import Outcomes
from controller.plan import Mode, plan
from controller.report import ItemState
from controller.spec import load_batch

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _execution(name: str, *, started: bool, outcome: ExecutionOutcome | None) -> ExecutionStatus:
    return ExecutionStatus(
        name=f"projects/p/locations/r/jobs/hello/executions/{name}",
        job="hello",
        key=None,
        task_count=1,
        running=0 if outcome else int(started),
        succeeded=1 if outcome is ExecutionOutcome.SUCCEEDED else 0,
        failed=1 if outcome is ExecutionOutcome.FAILED else 0,
        cancelled=0,
        retried=0,
        create_time=T0,
        start_time=T0 if started else None,
        completion_time=T0 if outcome else None,
        outcome=outcome,
        message=None,
        log_uri=None,
    )


def test_interim_reads_unfinished_and_unread_launches_as_unknown_and_none_as_cancelled(catalog: Catalog) -> None:
    keys = ["running", "pending", "ended-unread", "ended-read", "not-launched"]
    batch = load_batch({"batch_id": "interim", "items": [{"key": k, "job": "hello"} for k in keys]}, catalog)
    states = [LaunchState(launch) for launch in plan(batch, catalog, mode=Mode.PER_ITEM).launches]
    states[0].execution = _execution("a", started=True, outcome=None)
    states[1].execution = _execution("b", started=False, outcome=None)
    states[2].execution = _execution("c", started=True, outcome=ExecutionOutcome.FAILED)
    states[3].execution = _execution("d", started=True, outcome=ExecutionOutcome.FAILED)
    states[3].tasks = [TaskStatus(0, ItemState.FAILED, 3, 2, T0, T0, None)]
    outcomes = Outcomes(
        cancelled=True, cloud_lost=None, cancel_failed=frozenset(), redact=str, console_url=lambda _: None, interim=True
    )

    items = {item.key: item for item in outcomes.item_results(states)}

    assert {key: (items[key].state, items[key].reason) for key in keys} == {
        "running": (ItemState.FAILED, "outcome unknown: the batch was interrupted; it was last seen running"),
        "pending": (ItemState.FAILED, "outcome unknown: the batch was interrupted; it was last seen pending"),
        "ended-unread": (ItemState.FAILED, "outcome unknown: the batch was interrupted before its tasks were read"),
        "ended-read": (ItemState.FAILED, "task 0 exited with code 3 after 2 attempts"),
        "not-launched": (ItemState.NOT_LAUNCHED, "the batch was cancelled before this item launched"),
    }
    # Without interim, the same states read as a cancelled batch's final report does.
    final = {item.key: item.state for item in dataclasses.replace(outcomes, interim=False).item_results(states)}
    assert final["running"] is ItemState.CANCELLED
