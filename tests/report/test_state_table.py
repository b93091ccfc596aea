"""The item states are one table (controller/states.py): a state added as one row of it shows in the CLI
summary, the Markdown artifact and the HTML report, in its rank, with its label and colours, and the
outcomes and the summary order states the same way."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import controller
from controller.batch import LaunchState
from controller.catalog import Catalog
from controller.cloudrun import ExecutionOutcome, ExecutionStatus, TaskStatus
from controller.outcomes import Outcomes
from controller.plan import Mode, plan
from controller.report import ItemState, Report
from controller.spec import load_batch
from controller.summary import failed_first

MakeReport = Callable[..., Report]
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

# The throwaway row: ranked between timed out and cancelled, with colours no other state has.
ROW = '    SKIPPED = "skipped", 15, "skipped over", "blue", "#0a7ea4", "#38bdf8", False\n'

# Runs with the copy of controller/ that has the row: renders a report with one item in every state.
SCRIPT = textwrap.dedent(
    """
    import io, json, re
    from rich.console import Console
    from controller.html_report import render_html
    from controller.report import ItemResult, ItemState, Report, summarize
    from controller.summary import failed_first, print_summary, render_markdown
    from datetime import UTC, datetime

    at = datetime(2026, 12, 1, tzinfo=UTC)
    items = [ItemResult(key=f"item-{s.value}", index=i, job="hello", state=s) for i, s in enumerate(ItemState)]
    report = Report(
        batch_id="b", status="failed", spec_digest="d", project="p", region="r", mode="per-item",
        started_at=at, finished_at=at, summary=summarize(items, launches=0, duration_seconds=1.0),
        launches=[], items=items,
    )
    out = io.StringIO()
    print_summary(report, Console(file=out, width=200, color_system=None))
    print(json.dumps({
        "summary": out.getvalue(),
        "order": [item.state.value for item in failed_first(report)],
        "markdown": render_markdown(report),
        "html": render_html(report),
        "report": report.model_dump_json(),
    }))
    """
)


def test_a_state_added_as_one_row_shows_in_the_summary_markdown_and_html(tmp_path: Path) -> None:
    copy = tmp_path / "controller"
    shutil.copytree(Path(controller.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    states = copy / "states.py"
    text = states.read_text()
    last_row = re.search(r"^    NOT_LAUNCHED = .*\n", text, re.MULTILINE)
    assert last_row is not None
    states.write_text(text[: last_row.end()] + ROW + text[last_row.end() :])
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)

    # The summary counts it and lists its item in its rank; the report round-trips it.
    assert re.search(r"skipped over\s+1\s+16\.7%", out["summary"]), out["summary"]
    assert out["order"] == ["failed", "timed_out", "skipped", "cancelled", "not_launched"]
    assert '"state":"skipped"' in out["report"]
    # The Markdown counts it and lists its item, labelled.
    assert "| skipped over | 1 |" in out["markdown"]
    assert "| item-skipped | hello | skipped over |" in out["markdown"]
    # The HTML: a count button in the summary, its colours and classes, its row in the page data.
    html = out["html"]
    assert 'data-state="skipped"' in html
    assert "--skipped: #0a7ea4;" in html
    assert "--skipped: #38bdf8;" in html
    assert ".st-skipped::before { background: var(--skipped); }" in html
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL)
    assert data is not None
    page = json.loads(data.group(1))
    assert {"name": "skipped", "rank": 15, "label": "skipped over", "ran": False} in page["state_table"]
    assert page["states"][-1] == "skipped"


def test_an_item_whose_tasks_ended_differently_takes_the_worst_state(catalog: Catalog) -> None:
    """One order, worst first, in the outcomes as in the summary: failed before timed out before cancelled."""
    assert sorted(ItemState, key=lambda s: s.rank) == [
        ItemState.FAILED,
        ItemState.TIMED_OUT,
        ItemState.CANCELLED,
        ItemState.NOT_LAUNCHED,
        ItemState.SUCCEEDED,
    ]
    batch = load_batch({"batch_id": "worst", "items": [{"key": "a", "job": "hello"}]}, catalog)
    [state] = [LaunchState(launch) for launch in plan(batch, catalog, mode=Mode.PER_ITEM).launches]
    state.execution = ExecutionStatus(
        name="projects/p/locations/r/jobs/hello/executions/e",
        job="hello",
        key=None,
        task_count=3,
        running=0,
        succeeded=0,
        failed=3,
        cancelled=0,
        retried=0,
        create_time=T0,
        start_time=T0,
        completion_time=T0,
        outcome=ExecutionOutcome.FAILED,
        message=None,
        log_uri=None,
    )
    ended = [ItemState.CANCELLED, ItemState.TIMED_OUT, ItemState.FAILED]
    state.tasks = [TaskStatus(i, s, 1 if s is ItemState.FAILED else None, 1, T0, T0, None) for i, s in enumerate(ended)]
    outcomes = Outcomes(cancelled=False, cloud_lost=None, cancel_failed=frozenset(), redact=str, console_url=str)
    assert [item.state for item in outcomes.item_results([state])] == [ItemState.FAILED]
    state.tasks = state.tasks[:2]
    assert [item.state for item in outcomes.item_results([state])] == [ItemState.TIMED_OUT]


def test_the_summary_lists_in_rank_order(make_report: MakeReport) -> None:
    order = [item.state for item in failed_first(make_report(400))]
    assert order == sorted(order, key=lambda state: state.rank)
    assert set(order) == set(ItemState) - {ItemState.SUCCEEDED}


def test_the_page_carries_the_table_it_draws_with(make_report: MakeReport) -> None:
    from controller.html_report import render_html

    html = render_html(make_report(20))
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL)
    assert data is not None
    table = json.loads(data.group(1))["state_table"]
    assert [row["name"] for row in table] == [state.value for state in ItemState]
    assert {row["name"]: row["rank"] for row in table} == {state.value: state.rank for state in ItemState}
    for state in ItemState:
        assert f"--{state}: {state.light};" in html
        assert f"--{state}: {state.dark};" in html
