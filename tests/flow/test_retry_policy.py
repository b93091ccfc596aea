"""The controller's own retries (``retry:`` in the spec, ``--retry``): an item that exits 137 is launched again,
as a launch of just the items that need it, and then succeeds; one that exits 2 is not. In packed, per-item
and one-off mode alike, through real Prefect flow runs on the Cloud Run emulator, reports in fake-gcs-server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from flowsupport import executions_with_key

from cloudrun_emulator import Emulator
from controller.report import ItemState, Report

Run = Callable[..., tuple[dict[str, Any], Report]]

POLICY = {"attempts": 3, "on": [137, 143, "infrastructure"], "never": [2], "backoff": 0.1}
# A one-off image's own program: killed (137) on its first controller-side attempt, fine after.
KILLED_FIRST = "import os, sys; sys.exit(137 if os.environ.get('FANOUT_ATTEMPT', '1') == '1' else 0)"


def _flaky(key: str, *args: str) -> dict[str, Any]:
    return {"key": key, "job": "flaky", "args": list(args)}


def _one_off(key: str, code: str) -> dict[str, Any]:
    return {"key": key, "image": "example.com/no-runner:1", "command": [sys.executable, "-c", code]}


def _spec(batch_id: str, mode: str) -> dict[str, Any]:
    if mode == "one-off":
        items = [
            _one_off("recovers-a", KILLED_FIRST),
            _one_off("recovers-b", KILLED_FIRST),
            _one_off("usage", "import sys; sys.exit(2)"),
            _one_off("fine", "pass"),
        ]
    else:
        items = [
            _flaky("recovers-a", "--exit-code", "137", "--fail-runs", "1"),
            _flaky("recovers-b", "--exit-code", "137", "--fail-runs", "1"),
            _flaky("usage", "--exit-code", "2"),
            _flaky("fine"),
        ]
    # One-off jobs are kept, so the test can list their executions.
    return {"batch_id": batch_id, "defaults": {"retry": POLICY}, "items": items, "keep_jobs": mode == "one-off"}


@pytest.mark.parametrize("mode", ["packed", "per-item", "one-off"])
def test_exit_137_is_retried_and_succeeds_exit_2_is_not(run_flow: Run, emulator: Emulator, mode: str) -> None:
    batch_id = f"retry-{mode}"
    _summary, report = run_flow(_spec(batch_id, mode), mode="auto" if mode == "one-off" else mode)
    items = {item.key: item for item in report.items}
    launches = {launch.index: launch for launch in report.launches}

    for key in ("recovers-a", "recovers-b"):
        item = items[key]
        assert item.state is ItemState.SUCCEEDED, item
        assert item.history is not None
        first, second = item.history
        assert (first.attempt, first.state, first.exit_code) == (1, ItemState.FAILED, 137)
        assert first.retry == "retried: exit code 137 is in retry.on"
        assert (second.attempt, second.state, second.retry) == (2, ItemState.SUCCEEDED, "not retried: it succeeded")
        assert second.launch == item.launch != first.launch
        retry = launches[second.launch]
        assert retry.attempt == 2 and retry.key.endswith("/attempt-2")
        # Exactly once: one execution carries the retry launch's key.
        assert len(executions_with_key(emulator, retry.job, retry.key)) == 1

    usage = items["usage"]
    assert usage.state is ItemState.FAILED and usage.exit_code == 2
    assert usage.history is not None
    [only] = usage.history
    assert only.retry == "not retried: exit code 2 is in retry.never"
    assert items["fine"].state is ItemState.SUCCEEDED and items["fine"].history is None

    retries = [launch for launch in report.launches if launch.attempt > 1]
    if mode == "packed":
        # The two items that needed another attempt went out together, as one packed launch of two tasks.
        assert [(launch.packed, launch.items) for launch in retries] == [(True, 2)]
    else:
        assert [launch.items for launch in retries] == [1, 1]
    assert report.summary.by_state[ItemState.SUCCEEDED] == 3


def test_no_attempts_left_is_the_reason(run_flow: Run) -> None:
    """An item that keeps failing is tried as often as its own policy says, and the last attempt says why it
    stopped there; the --retry parameter replaces the spec's defaults, an item's own policy wins over it."""
    spec = {
        "batch_id": "retry-exhausted",
        "defaults": {"retry": {"attempts": 5, "backoff": 0.1}},
        "items": [
            {**_flaky("stubborn", "--exit-code", "143"), "retry": {"attempts": 2, "backoff": 0.1}},
            _flaky("by-flag", "--exit-code", "9"),
        ],
    }
    _summary, report = run_flow(spec, mode="per-item", retry={"attempts": 3, "on": [143], "backoff": 0.1})
    items = {item.key: item for item in report.items}

    stubborn = items["stubborn"]
    assert stubborn.state is ItemState.FAILED and stubborn.history is not None
    assert [a.retry for a in stubborn.history] == [
        "retried: exit code 143 (any failure is retried)",
        "not retried: no attempts left (2 of 2)",
    ]
    by_flag = items["by-flag"]
    assert by_flag.history is not None
    assert [a.retry for a in by_flag.history] == ["not retried: exit code 9 is not in retry.on"]
