"""``ExecutionStatus`` and ``TaskStatus`` from literal Cloud Run Admin API v2 payloads.

The payloads use the field names and enum values of Google's REST reference (Execution:
https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions, Task:
https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions.tasks, Condition:
https://cloud.google.com/run/docs/reference/rest/v2/Condition), parsed by google-cloud-run's own message types
as the REST transport does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.cloud import run_v2

from controller.cloudrun import ExecutionOutcome, ExecutionStatus, TaskStatus
from controller.report import ItemState

EXECUTION = "projects/p/locations/us-central1/jobs/hello/executions/hello-abc12"


def _task(**fields: Any) -> TaskStatus:
    payload = {"name": f"{EXECUTION}/tasks/hello-abc12-task0", "index": 0, "retried": 0, **fields}
    return TaskStatus.from_message(run_v2.Task.from_json(json.dumps(payload)))


def _execution(**fields: Any) -> ExecutionStatus:
    payload = {
        "name": EXECUTION,
        "job": "hello",
        "taskCount": 2,
        "createTime": "2026-11-30T06:00:00.123456Z",
        "template": {
            "containers": [{"image": "example.com/hello", "env": [{"name": "FANOUT_LAUNCH_KEY", "value": "b/n/00003"}]}]
        },
        **fields,
    }
    return ExecutionStatus.from_message(run_v2.Execution.from_json(json.dumps(payload)))


def _completed(state: str, message: str = "", **extra: str) -> list[dict[str, str]]:
    return [{"type": "Completed", "state": state, "message": message, **extra}]


def test_a_task_that_exited_non_zero_keeps_its_code() -> None:
    task = _task(
        retried=1,
        startTime="2026-11-30T06:00:01Z",
        completionTime="2026-11-30T06:00:09Z",
        conditions=_completed("CONDITION_FAILED", "Task failed", executionReason="NON_ZERO_EXIT_CODE"),
        lastAttemptResult={"status": {"code": 2, "message": "Container exited with code 3"}, "exitCode": 3},
    )
    assert (task.state, task.exit_code, task.attempts) == (ItemState.FAILED, 3, 2)
    assert task.message == "Container exited with code 3"


def test_a_task_that_never_started_has_no_exit_code_and_says_why() -> None:
    # exitCode is unset ("may be unset if the container was unable to exit cleanly"): it reads 0 on the wire.
    task = _task(
        completionTime="2026-11-30T06:00:04Z",
        conditions=_completed("CONDITION_FAILED", "The task failed."),
        lastAttemptResult={
            "status": {"code": 5, "message": "Secret projects/p/secrets/token/versions/latest was not found"}
        },
    )
    assert (task.state, task.exit_code) == (ItemState.FAILED, None)
    assert task.message == "Secret projects/p/secrets/token/versions/latest was not found"


def test_a_task_without_any_attempt_result_takes_the_condition_message() -> None:
    task = _task(
        completionTime="2026-11-30T06:00:04Z",
        conditions=_completed("CONDITION_FAILED", "Container failed to start: executable file not found"),
    )
    assert (task.state, task.exit_code, task.attempts) == (ItemState.FAILED, None, 0)
    assert task.message == "Container failed to start: executable file not found"


def test_a_task_killed_by_a_signal_says_so() -> None:
    task = _task(
        startTime="2026-11-30T06:00:01Z",
        completionTime="2026-11-30T06:00:02Z",
        conditions=_completed("CONDITION_FAILED"),
        lastAttemptResult={"status": {"code": 2, "message": "Container terminated"}, "termSignal": 9},
    )
    assert (task.state, task.exit_code) == (ItemState.FAILED, None)
    assert task.message == "Container terminated; terminated by signal 9"


def test_timed_out_cancelled_succeeded_and_running_tasks() -> None:
    timed_out = _task(
        completionTime="2026-11-30T06:00:30Z",
        conditions=_completed("CONDITION_FAILED"),
        lastAttemptResult={"status": {"code": 4, "message": "Task exceeded its timeout"}},
    )
    assert (timed_out.state, timed_out.exit_code) == (ItemState.TIMED_OUT, None)
    cancelled = _task(
        completionTime="2026-11-30T06:00:30Z", conditions=_completed("CONDITION_FAILED", executionReason="CANCELLED")
    )
    assert cancelled.state is ItemState.CANCELLED
    succeeded = _task(
        startTime="2026-11-30T06:00:01Z",
        completionTime="2026-11-30T06:00:02Z",
        conditions=_completed("CONDITION_SUCCEEDED", "Completed successfully"),
        lastAttemptResult={"status": {}, "exitCode": 0},
    )
    assert (succeeded.state, succeeded.exit_code, succeeded.message) == (ItemState.SUCCEEDED, 0, None)
    running = _task(startTime="2026-11-30T06:00:01Z", conditions=_completed("CONDITION_RECONCILING"))
    assert (running.state, running.exit_code, running.attempts) == (None, None, 1)
    assert running.start_time == datetime(2026, 11, 30, 6, 0, 1, tzinfo=UTC)


def test_execution_outcomes() -> None:
    running = _execution(runningCount=2, startTime="2026-11-30T06:00:01Z")
    assert running.outcome is None and not running.done and running.key == "b/n/00003"
    assert running.create_time == datetime(2026, 11, 30, 6, 0, 0, 123456, tzinfo=UTC)
    succeeded = _execution(
        succeededCount=2, completionTime="2026-11-30T06:01:00Z", conditions=_completed("CONDITION_SUCCEEDED")
    )
    assert succeeded.outcome is ExecutionOutcome.SUCCEEDED and succeeded.finished_tasks == 2
    failed = _execution(
        succeededCount=1,
        failedCount=1,
        completionTime="2026-11-30T06:01:00Z",
        conditions=_completed(
            "CONDITION_FAILED", "Task hello-abc12-task1 failed", executionReason="NON_ZERO_EXIT_CODE"
        ),
    )
    assert failed.outcome is ExecutionOutcome.FAILED and failed.message == "Task hello-abc12-task1 failed"
    cancelled = _execution(
        cancelledCount=2,
        completionTime="2026-11-30T06:01:00Z",
        conditions=_completed("CONDITION_FAILED", "The execution was cancelled", executionReason="CANCELLED"),
    )
    assert cancelled.outcome is ExecutionOutcome.CANCELLED
