"""The fan-out flow end to end: a real Prefect flow run, the Cloud Run emulator, fake-gcs-server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flowsupport import executions_with_key

from cloudrun_emulator import Emulator, Faults, MethodFaults
from controller.report import BatchStatus, ItemState, Report

Run = Callable[..., tuple[dict[str, Any], Report]]


def mixed_spec(batch_id: str) -> dict[str, Any]:
    """56 items: what each should end as is in its key."""
    items: list[dict[str, Any]] = []
    items += [{"key": f"ok-{i}", "job": "hello", "args": [f"name{i}"]} for i in range(30)]
    items += [{"key": f"exit3-{i}", "job": "flaky", "args": ["--exit-code", "3"]} for i in range(10)]
    items += [{"key": f"retry-{i}", "job": "flaky", "args": ["--fail-attempts", "1"]} for i in range(6)]
    items += [{"key": f"slow-{i}", "job": "flaky", "args": ["--sleep", "30"], "timeout": "2s"} for i in range(5)]
    items += [{"key": f"missing-{i}", "job": "wordcount", "args": [f"/nonexistent/{i}.txt"]} for i in range(5)]
    return {"batch_id": batch_id, "items": items}


# key prefix -> (state, exit code, attempts): flaky retries once, wordcount twice (their job.yaml).
EXPECTED = {
    "ok": (ItemState.SUCCEEDED, 0, 1),
    "exit3": (ItemState.FAILED, 3, 2),
    "retry": (ItemState.SUCCEEDED, 0, 2),
    "slow": (ItemState.TIMED_OUT, None, 2),
    "missing": (ItemState.FAILED, 66, 3),
}


def test_mixed_batch_report_item_by_item(run_flow: Run, capsys: pytest.CaptureFixture[str]) -> None:
    summary, report = run_flow(mixed_spec("it-mixed"))

    assert report.batch_id == "it-mixed"
    assert report.status is BatchStatus.FAILED
    assert len(report.items) == 56
    assert [item.key for item in report.items] == [item["key"] for item in mixed_spec("x")["items"]]
    for item in report.items:
        state, exit_code, attempts = EXPECTED[item.key.split("-")[0]]
        assert (item.state, item.exit_code, item.attempts) == (state, exit_code, attempts), item.key
        assert item.execution and item.start_time and item.end_time and item.create_time
        assert item.console_url is None  # the emulator's executions are in no Cloud Console
        assert item.log_url is None
        assert item.start_time <= item.end_time
    assert report.summary.by_state == {
        ItemState.SUCCEEDED: 36,
        ItemState.FAILED: 15,
        ItemState.TIMED_OUT: 5,
        ItemState.CANCELLED: 0,
        ItemState.NOT_LAUNCHED: 0,
    }
    assert summary == {
        "batch_id": "it-mixed",
        "status": "failed",
        "report": "gs://fanout-reports/flow-tests/it-mixed/report.json",
        "total": 56,
        "succeeded": 36,
        "failed": 15,
        "timed_out": 5,
        "cancelled": 0,
        "not_launched": 0,
    }
    # Packed by default: hello, flaky (2s timeout apart) and wordcount share executions.
    assert sorted((launch.job, launch.items) for launch in report.launches) == [
        ("flaky", 5),
        ("flaky", 16),
        ("hello", 30),
        ("wordcount", 5),
    ]
    # Failed items carry what they printed; successes don't by default.
    missing = next(item for item in report.items if item.key == "missing-0")
    assert missing.log_tail and "cannot read /nonexistent/0.txt" in missing.log_tail[0]
    assert next(item for item in report.items if item.key == "ok-0").log_tail is None
    assert report.flow_run_id

    # `fanout report show` reads it back from the bucket (the folder URL is enough).
    from controller.cli import main

    capsys.readouterr()
    assert main(["report", "show", "gs://fanout-reports/flow-tests/it-mixed", "--failed", "3"]) == 0
    shown = capsys.readouterr().out
    assert "20 of 56 items did not succeed" in shown
    assert "exit3-0" in shown


def test_transient_run_errors_are_retried_without_a_second_execution(run_flow: Run, emulator: Emulator) -> None:
    # A quarter of RunJob answers are 429/503, and 15% of the rest come back 503 after the execution was
    # created: the controller must retry the first kind and adopt, not repeat, the second.
    emulator.set_faults(
        Faults(seed=11, methods={"Jobs.RunJob": MethodFaults(error_rates={429: 0.15, 503: 0.1}, drop_rate=0.15)})
    )
    before = emulator.stats().get("Jobs.RunJob", 0)
    try:
        spec = {"batch_id": "it-transient", "items": [{"job": "hello", "args": [f"n{i}"]} for i in range(12)]}
        summary, report = run_flow(spec, mode="per-item")
    finally:
        emulator.set_faults(Faults())
    run_requests = emulator.stats()["Jobs.RunJob"] - before
    assert summary["succeeded"] == 12
    assert run_requests > 12, "the faults must have forced retries"
    keys = Counter(launch.key for launch in report.launches)
    assert len(keys) == 12
    for launch in report.launches:
        assert executions_with_key(emulator, "hello", launch.key) == [launch.execution]


@pytest.mark.parametrize("mode", ["per-item", "packed"])
def test_live_progress_counts_a_timed_out_item_apart_from_a_failed_one(run_flow: Run, mode: str) -> None:
    # Cloud Run counts a task stopped at its timeout among the execution's failed tasks; the live counts
    # must say what the summary says: one failed, one timed out (flaky retries once: two attempts each).
    from controller.flow import progress_sink

    seen: list[dict[str, int]] = []
    spec = {
        "batch_id": f"it-progress-timeout-{mode}",
        "items": [
            {"key": "slow", "job": "flaky", "args": ["--sleep", "30"], "timeout": "1s"},
            {"key": "exit3", "job": "flaky", "args": ["--exit-code", "3"]},
        ],
    }
    token = progress_sink.set(lambda counts: seen.append(dict(counts)))
    try:
        summary, _report = run_flow(spec, mode=mode)
    finally:
        progress_sink.reset(token)
    assert (summary["failed"], summary["timed_out"]) == (1, 1)
    assert seen, "the watch reported no progress"
    assert {state: n for state, n in seen[-1].items() if n} == {ItemState.FAILED: 1, ItemState.TIMED_OUT: 1}
    assert all(counts.get(ItemState.FAILED, 0) <= 1 for counts in seen), seen
