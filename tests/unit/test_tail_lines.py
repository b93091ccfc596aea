"""Log tails as a person reads them: grouped by task and attempt, ERROR lines marked, the failed task's last line."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from controller.logs import Tail, TailLine
from controller.report import ItemResult, ItemState, TailGroup, TaskResult
from controller.summary import last_log_entry


def test_a_tail_is_grouped_by_task_then_attempt_with_error_positions() -> None:
    newest_first = [
        TailLine("t0 late", 0, 0, False),
        TailLine("t1 second try", 1, 1, True),
        TailLine("t0 early", 0, 0, False),
        TailLine("t1 first try", 1, 0, True),
    ]
    fields = Tail(lines=newest_first).fields()
    assert fields["log_tail"] == ["t0 early", "t0 late", "t1 first try", "t1 second try"]
    assert fields["log_tail_groups"] == [
        TailGroup(task_index=0, attempt=0, lines=2),
        TailGroup(task_index=1, attempt=0, lines=1),
        TailGroup(task_index=1, attempt=1, lines=1),
    ]
    assert fields["log_tail_errors"] == [2, 3]
    one = Tail(lines=[TailLine("b", 0, 0, False), TailLine("a", 0, 0, False)]).fields()
    assert one["log_tail"] == ["a", "b"]
    assert one["log_tail_groups"] is None and one["log_tail_errors"] is None


def test_the_last_line_shown_is_the_failed_tasks_and_the_terminal_marks_it() -> None:
    from controller.report import Report, summarize
    from controller.summary import print_summary

    item = ItemResult(
        key="k", index=0, job="j", state=ItemState.FAILED, exit_code=3,
        tasks=[TaskResult(index=0, state=ItemState.SUCCEEDED), TaskResult(index=1, state=ItemState.FAILED)],
        log_tail=["t0 ok", "t1 boom", "   ", "t2 ok"],
        log_tail_groups=[TailGroup(task_index=0, attempt=0, lines=1), TailGroup(task_index=1, attempt=0, lines=2),
                         TailGroup(task_index=2, attempt=0, lines=1)],
        log_tail_errors=[1],
        vcpu_seconds=20.2, gib_seconds=10.1, cost_usd=0.0003838,
    )  # fmt: skip
    assert last_log_entry(item) == ("t1 boom", True)
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    report = Report(
        batch_id="b", status="failed", spec_digest="d", project="p", region="r", mode="auto",
        started_at=now, finished_at=now, summary=summarize([item], launches=1, duration_seconds=1.0),
        launches=[], items=[item],
    )  # fmt: skip
    out = StringIO()
    print_summary(report, Console(file=out, width=100, color_system=None))
    text = out.getvalue()
    assert "ERROR t1 boom" in text
    assert "cost 20.2 vCPU-s, 10.1 GiB-s, ~$0.000384 (estimate" in text
