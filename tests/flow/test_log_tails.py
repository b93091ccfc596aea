"""Log tails in the report are exactly the last lines each failed item printed, fetched in a few calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cloudrun_emulator import Emulator
from controller.report import ItemState, Report

pytestmark = pytest.mark.slow

LINES = 80  # each failing item prints this many lines; the report keeps the last 50


def printer(key: str, fail: bool) -> list[str]:
    # One stream: lines of one stream keep their order in any logging system; stdout and stderr, read
    # through separate pipes, need not interleave exactly as written (on Cloud Run either).
    script = f'for i in $(seq 1 {LINES}); do echo "{key} line $i"; done; exit {4 if fail else 0}'
    return ["sh", "-c", script]


def test_failed_items_tails_are_their_last_lines_in_a_handful_of_calls(
    run_flow: Callable[..., tuple[dict[str, Any], Report]], emulator: Emulator
) -> None:
    items = [
        {"key": f"item-{i:03d}", "image": "busybox:1.36", "command": printer(f"item-{i:03d}", i % 5 == 0)}
        for i in range(100)
    ]
    before = emulator.stats().get("Logging.ListLogEntries", 0)
    _summary, report = run_flow({"batch_id": "it-tails", "items": items}, rates={"run": None, "read": None})
    calls = emulator.stats()["Logging.ListLogEntries"] - before

    failed = [item for item in report.items if item.state is ItemState.FAILED]
    assert len(failed) == 20
    assert all(item.state is ItemState.SUCCEEDED for item in report.items if item not in failed)
    for item in failed:
        expected = [f"{item.key} line {n}" for n in range(LINES - 49, LINES + 1)]
        assert item.log_tail == expected, item.key
        assert item.log_tail_truncated
        assert item.exit_code == 4
    assert all(item.log_tail is None for item in report.items if item.state.ok)
    # 20 executions x 80 lines = 1,600 entries under one filter (pages of 1,000): a few calls, not one per item.
    assert 1 <= calls <= 6, calls
    # All 100 one-off items share a single job: same image, same program.
    assert {item.job for item in report.items} == {report.launches[0].job}


TASKS_SCRIPT = (
    'echo "task $CLOUD_RUN_TASK_INDEX attempt $CLOUD_RUN_TASK_ATTEMPT start"; '
    'if [ "$CLOUD_RUN_TASK_INDEX" = 1 ]; then echo \'{"severity": "ERROR", "error": "task 1 broke", "code": 7}\'; '
    "exit 3; fi; "
    'echo "task $CLOUD_RUN_TASK_INDEX done"'
)


def test_a_tail_of_several_tasks_is_grouped_by_task_and_attempt_and_ends_with_the_failed_task(
    run_flow: Callable[..., tuple[dict[str, Any], Report]],
) -> None:
    from controller.summary import last_log_entry, render_markdown

    item = {"key": "three", "image": "busybox:1.36", "command": ["sh", "-c", TASKS_SCRIPT], "task_count": 3}
    _summary, report = run_flow({"batch_id": "it-tail-groups", "items": [{**item, "retries": 1}]})

    (result,) = report.items
    assert result.state is ItemState.FAILED
    broke = '{"code": 7, "error": "task 1 broke"}'  # the JSON line as JSON, its severity taken by Cloud Run
    assert result.log_tail == [
        "task 0 attempt 0 start",
        "task 0 done",
        "task 1 attempt 0 start",
        broke,
        "task 1 attempt 1 start",
        broke,
        "task 2 attempt 0 start",
        "task 2 done",
    ]
    groups = [(g.task_index, g.attempt, g.lines) for g in result.log_tail_groups or []]
    assert groups == [(0, 0, 2), (1, 0, 2), (1, 1, 2), (2, 0, 2)]
    assert result.log_tail_errors == [3, 5]
    # The last line of the item is task 2's; the one a person is shown is the failed task's, marked.
    assert last_log_entry(result) == (broke, True)
    assert "**ERROR** " in render_markdown(report)
