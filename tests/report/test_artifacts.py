"""publish_artifacts against a real (temporary) Prefect server, read back through the Prefect client."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import Flow, flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId, FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import Artifact
from prefect.context import get_run_context

from controller import artifacts
from controller.artifacts import FAILED_ITEMS_KEY, REPORT_KEY, ProgressArtifact, publish_artifacts
from controller.report import ItemState, Report
from controller.summary import failed_first

pytestmark = pytest.mark.usefixtures("prefect_server")

MakeReport = Callable[..., Report]
REPORT_URL = "gs://reports/batch-demo/report.html"


def flow_run_id() -> UUID:
    context = get_run_context()
    run = getattr(context, "flow_run", None)
    assert run is not None
    return UUID(str(run.id))


# The report is captured, not passed as a parameter: Prefect stores flow parameters and refuses ones over
# 512 KB, which a 2,000-item report is.
def publishing_flow(report: Report) -> Flow[[], UUID]:
    @flow(name="publish-report")
    def publish() -> UUID:
        publish_artifacts(report, report_url=REPORT_URL)
        return flow_run_id()

    return publish


def publishing_flow_async(report: Report) -> Flow[[], Coroutine[Any, Any, UUID]]:
    @flow(name="publish-report-async")
    async def publish() -> UUID:
        publish_artifacts(report, report_url=REPORT_URL)
        return flow_run_id()

    return publish


def read_artifacts(run_id: UUID) -> dict[str, Artifact]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {artifact.key: artifact for artifact in artifacts if artifact.key}


def test_flow_run_gets_a_markdown_summary_and_a_failed_items_table(make_report: MakeReport) -> None:
    report = make_report(2000)
    run_id = publishing_flow(report)()

    artifacts = read_artifacts(run_id)
    assert set(artifacts) == {REPORT_KEY, FAILED_ITEMS_KEY}
    markdown = artifacts[REPORT_KEY]
    assert markdown.type == "markdown"
    assert isinstance(markdown.data, str)
    summary = report.summary
    assert f"**{summary.not_succeeded:,} of 2,000 items did not succeed**" in markdown.data
    assert f"| failed | {summary.by_state[ItemState.FAILED]:,} |" in markdown.data
    assert f"| succeeded | {summary.succeeded:,} |" in markdown.data
    assert REPORT_URL in markdown.data
    # The HTML page beside it, opened in the Cloud console: a gs:// URL is no link a browser follows.
    console = "https://console.cloud.google.com/storage/browser/_details/reports/batch-demo/report.html"
    assert f"HTML report: [report.html]({console})" in markdown.data
    worst = failed_first(report)
    assert all(f"| {item.key} |" in markdown.data for item in worst[:50])

    table = artifacts[FAILED_ITEMS_KEY]
    assert table.type == "table"
    assert isinstance(table.data, str)
    rows = json.loads(table.data)
    assert [row["key"] for row in rows] == [item.key for item in worst]
    assert rows[0]["state"] == "failed"
    assert rows[0]["last_log_line"].startswith("Traceback: ValueError")


def test_async_flow_gets_the_artifacts_too(make_report: MakeReport) -> None:
    report = make_report(50, states=[ItemState.SUCCEEDED, ItemState.TIMED_OUT])
    run_id = asyncio.run(publishing_flow_async(report)())
    artifacts = read_artifacts(run_id)
    assert "**25 of 50 items did not succeed**" in str(artifacts[REPORT_KEY].data)
    assert len(json.loads(str(artifacts[FAILED_ITEMS_KEY].data))) == 25


def test_outside_a_flow_run_nothing_is_published(make_report: MakeReport, caplog: pytest.LogCaptureFixture) -> None:
    report = make_report(3, states=[ItemState.FAILED])
    with caplog.at_level(logging.DEBUG, logger="controller.artifacts"):
        publish_artifacts(report)
    assert "not in a Prefect flow run" in caplog.text
    with get_client(sync_client=True) as client:
        assert not [a for a in client.read_artifacts() if a.flow_run_id is None]


def test_a_failing_artifact_call_is_a_warning_and_does_not_stop_the_other(
    make_report: MakeReport, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(**_: object) -> UUID:
        raise httpx.ConnectError("connection refused")

    # The Prefect function as our module sees it, replaced by one that fails like a dropped connection.
    monkeypatch.setattr(artifacts, "create_table_artifact", refused)
    report = make_report(3, states=[ItemState.FAILED])
    with caplog.at_level(logging.WARNING, logger="controller.artifacts"):
        run_id = publishing_flow(report)()
    warnings = [record for record in caplog.records if record.name == "controller.artifacts"]
    assert [record.getMessage() for record in warnings] == [
        f"could not publish Prefect artifact {FAILED_ITEMS_KEY} for batch batch-demo: ConnectError: connection refused"
    ]
    assert warnings[0].exc_info is None  # one line: no traceback on the console for a view of the batch
    assert set(read_artifacts(run_id)) == {REPORT_KEY}


# What the Prefect API holds of a progress artifact: its percentage, its description, when it last changed.
Shown = tuple[float, str, datetime]


def _progress_in_a_flow(steps: list[tuple[float, int]], total: int) -> list[Shown]:
    """Run a ProgressArtifact of ``total`` items in a flow, on a clock that reads each step's time: the
    artifact as the API holds it after each ``(seconds, items done)`` step, and after ``finish``."""
    now = [0.0]
    shown: list[Shown] = []

    def read_back(artifact: ProgressArtifact) -> None:
        assert artifact.artifact_id is not None
        by_id = ArtifactFilter(id=ArtifactFilterId(any_=[artifact.artifact_id]))
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(artifact_filter=by_id)
        assert len(found) == 1 and found[0].updated is not None
        shown.append((float(str(found[0].data)), str(found[0].description), found[0].updated))

    @flow(name="progress-throttle")
    def progress() -> None:
        artifact = ProgressArtifact("throttled", total, interval=2.0, clock=lambda: now[0])
        for at, done in steps:
            now[0] = at
            artifact.record({"succeeded": done, "pending": total - done})
            read_back(artifact)
        artifact.finish(total)
        read_back(artifact)

    progress()
    return shown


def test_the_progress_artifact_is_updated_at_most_once_an_interval_and_last_with_every_item() -> None:
    steps = [(0.0, 1), (0.5, 2), (1.9, 3), (2.0, 4), (9.0, 4), (9.1, 7), (9.2, 9)]
    shown = _progress_in_a_flow(steps, 10)
    # Created at the first count; the next two come within 2 s of it; 4 is due; 4 again is no change; 7 is
    # due; 9 comes 0.1 s after it. finish() writes every item, throttled or not.
    assert [percent for percent, _, _ in shown] == [10.0, 10.0, 10.0, 40.0, 40.0, 70.0, 70.0, 100.0]
    assert [description for _, description, _ in shown][-2:] == [
        "batch throttled: 7 of 10 items done",
        "batch throttled: 10 of 10 items done",
    ]
    # Each write the API took changed the artifact's time: four writes, none while throttled.
    assert len({updated for _, _, updated in shown}) == 4


def test_the_count_reaching_the_total_is_written_at_once_and_finish_writes_it_no_more() -> None:
    shown = _progress_in_a_flow([(0.0, 1), (0.1, 5)], 5)
    assert [percent for percent, _, _ in shown] == [20.0, 100.0, 100.0]
    assert shown[1] == shown[2]  # finish() found every item written: no second write
    assert shown[2][1] == "batch throttled: 5 of 5 items done"


# Text a task controls (log lines, reasons) that Markdown would turn into a fetch, a script or a link.
HOSTILE_MARKDOWN = [
    "![x](http://evil.example/pixel.png)",
    "[click me](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(2)">x</a>',
    "<javascript:alert(3)>",
    "&#x6A;avascript:alert(4)",
    "a | b | c",
    "first line\nsecond line",
]


def _rendered(markdown: str) -> str:
    """Markdown as the Prefect UI would show it: CommonMark with GitHub tables, as HTML."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(markdown)


class _Tags(HTMLParser):
    """The elements of a piece of HTML, with their attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _assert_inert(html: str) -> None:
    """No element that fetches or runs anything, and links only to the web."""
    tags = _Tags(html).tags
    assert not [tag for tag, _ in tags if tag in {"img", "script", "iframe", "object", "svg"}], html
    assert all(str(attrs.get("href", "")).startswith("https://") for tag, attrs in tags if tag == "a"), html
    assert not [attrs for _, attrs in tags if any(name.startswith("on") for name in attrs)], html


def test_hostile_task_text_stays_inert_in_both_artifacts(make_report: MakeReport) -> None:
    report = make_report(len(HOSTILE_MARKDOWN), states=[ItemState.FAILED], hostile_every=10**9)
    items = [
        replace(item, log_tail=["ok", text], reason=text, console_url="javascript:alert(5)", log_url=None)
        for item, text in zip(report.items, HOSTILE_MARKDOWN, strict=True)
    ]
    report = report.model_copy(update={"items": items, "problems": HOSTILE_MARKDOWN})
    run_id = publishing_flow(report)()
    artifacts = read_artifacts(run_id)

    markdown = str(artifacts[REPORT_KEY].data)
    html = _rendered(markdown)
    _assert_inert(html)
    # One row per item, each with its seven cells: no pipe or newline from a task split a row or a cell.
    body = html.split("<tbody>")[-1]
    rows = body.split("<tr>")[1:]
    assert len(rows) == len(HOSTILE_MARKDOWN)
    assert all(row.count("<td") == 7 for row in rows)

    table = json.loads(str(artifacts[FAILED_ITEMS_KEY].data))
    assert [row["console_url"] for row in table] == [None] * len(HOSTILE_MARKDOWN)
    for row in table:
        for column in ("key", "job", "reason", "last_log_line"):
            cell = _rendered(str(row[column]))
            _assert_inert(cell)
            assert cell.count("<p>") <= 1  # one paragraph: a newline did not start a block
