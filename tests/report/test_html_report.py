"""render_html as text: the embedded data, the escaping, the Content-Security-Policy, no external references."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller import html_report
from controller.html_report import ITEM_COLUMNS, TASK_COLUMNS, page_data_chunks, render_html, shown_items
from controller.report import ItemResult, ItemState, Report, TaskResult, item_json
from controller.summary import worst_first

MakeReport = Callable[..., Report]
DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.DOTALL)


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def decode_page_data(text: str) -> Report:
    """The report back from the page data, written from the format's description, not from the encoder."""
    data = json.loads(text)
    base = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=data["base_us"])

    def when(offset: int | None) -> datetime | None:
        return None if offset is None else base + timedelta(microseconds=offset)

    def named(columns: list[str], row: list[Any]) -> dict[str, Any]:
        return dict(zip(columns, row + [None] * (len(columns) - len(row)), strict=True))

    items = []
    for row in data["items"]:
        item = named(data["columns"], row)
        for name in data["shared_columns"]:
            item[name] = None if item[name] is None else data["strings"][item[name]]
        for name in data["time_columns"]:
            item[name] = when(item[name])
        item["state"] = data["states"][item["state"]]
        item["log_tail_truncated"] = bool(item["log_tail_truncated"])
        if item["tasks"] is None:
            mirrored = ("state", "exit_code", "attempts", "start_time", "end_time")
            item["tasks"] = [{"index": item["task_index"] or 0, **{name: item[name] for name in mirrored}}]
        else:
            item["tasks"] = [named(data["task_columns"], task) for task in item["tasks"]]
            for task in item["tasks"]:
                task["state"] = data["states"][task["state"]]
                task["start_time"], task["end_time"] = when(task["start_time"]), when(task["end_time"])
        items.append(item)
    return Report.model_validate({**data["report"], "items": items})


def test_the_report_is_embedded_once_and_round_trips(make_report: MakeReport) -> None:
    report = make_report(500)
    # Beyond the synthetic mix: an item with two tasks, one whose only task differs from it, one with none.
    first, second, third = report.items[:3]
    start = first.start_time or datetime(2026, 5, 1, tzinfo=UTC)
    two_tasks = [
        TaskResult(index=0, state=ItemState.SUCCEEDED, exit_code=0, attempts=1, start_time=start),
        TaskResult(index=1, state=ItemState.FAILED, exit_code=3, attempts=2, end_time=start + timedelta(seconds=1)),
    ]
    items = [
        dataclasses.replace(first, tasks=two_tasks, exit_code=3, state=ItemState.FAILED),
        dataclasses.replace(second, tasks=[dataclasses.replace(second.tasks[0], attempts=second.attempts + 1)]),
        dataclasses.replace(third, tasks=[]),
        # Results: a nested value with markup in it, false (not "nothing"), and one kept out by reference.
        dataclasses.replace(report.items[3], result={"rows": [1, None, "</script><b>x</b>"], "ok": True}),
        dataclasses.replace(report.items[4], result=False),
        dataclasses.replace(report.items[5], result_uri="gs://bucket/b/results/item-00005/0.json"),
        *report.items[6:],
    ]
    report = report.model_copy(update={"items": items})
    html = render_html(report)
    blocks = DATA.findall(html)
    assert len(blocks) == 1
    assert decode_page_data(blocks[0]) == report
    assert html.count('"item-00042"') == 1


def test_every_item_and_task_field_has_a_column() -> None:
    assert set(ITEM_COLUMNS) == {field.name for field in dataclasses.fields(ItemResult)}
    assert set(TASK_COLUMNS) == {field.name for field in dataclasses.fields(TaskResult)}


def test_the_page_data_is_far_smaller_than_report_json(make_report: MakeReport) -> None:
    report = make_report(2000)
    page = sum(len(chunk) for chunk in page_data_chunks(report))
    canonical = len(report.header_json()) + sum(len(item_json(item)) + 1 for item in report.items)  # + shards
    assert page < 0.5 * canonical, (page, canonical)


def test_untrusted_text_cannot_end_the_data_block_or_add_markup(
    make_report: MakeReport, hostile: str
) -> None:
    report = make_report(50, hostile_every=1)
    html = render_html(report)
    data = DATA.search(html)
    assert data is not None
    assert "<" not in data.group(1)
    assert ">" not in data.group(1)
    assert "<img" not in html
    assert html.count("</script>") == 2  # the data block and the page script, nothing from the data
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html  # the problem, escaped in the summary
    assert hostile not in html


def test_text_that_looks_like_a_placeholder_stays_text(make_report: MakeReport) -> None:
    report = make_report(3).model_copy(update={"problems": ["{{CSP}} {{DATA}}"], "batch_id": "{{SUMMARY}}"})
    html = render_html(report)
    assert (
        html.count("{{CSP}} {{DATA}}") == 2
    )  # the summary's problem list and the JSON data, nothing expanded
    assert html.count("<header>") == 1
    assert len(DATA.findall(html)) == 1


def test_content_security_policy_allows_only_the_pages_own_style_and_script(make_report: MakeReport) -> None:
    html = render_html(make_report(10))
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert policy is not None
    directives = dict(part.strip().split(" ", 1) for part in policy.group(1).split(";"))
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL)
    style = re.search(r"<style>(.*?)</style>", html, re.DOTALL)
    assert script is not None
    assert style is not None
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == sha256(script.group(1))
    assert directives["style-src"] == sha256(style.group(1))


def test_nothing_outside_the_data_points_at_the_network(make_report: MakeReport) -> None:
    html = DATA.sub("", render_html(make_report(100)))
    assert not re.search(r"<[a-z][^>]*\s(?:src|href|srcset|poster|action)\s*=", html, re.IGNORECASE)
    for reference in ("http://", "https://", "url(", "@import", "@font-face"):
        assert reference not in html, reference


def test_summary_is_in_the_markup_without_javascript(make_report: MakeReport) -> None:
    report = make_report(1000)
    html = render_html(report)
    for state in ItemState:
        count = report.summary.by_state[state]
        assert f'data-count="{state.value}" data-value="{count}">{count:,}</span>' in html
    assert 'data-count="total" data-value="1000">1,000</span>' in html
    assert f'<span class="status status-failed" id="batch-status">{report.status.value}</span>' in html
    assert f"{report.summary.not_succeeded:,} of 1,000 items did not succeed" in html
    for fact in ("demo-project", "europe-west1", "sha256:0123456789abcdef", "fanout.report/v2", "1h05m"):
        assert fact in html


def test_page_size_stays_close_to_the_compact_json(make_report: MakeReport) -> None:
    report = make_report(2000)
    overhead = len(render_html(report)) - sum(len(chunk) for chunk in page_data_chunks(report))
    assert overhead < 40_000  # template and summary; the data is the page


def test_rerun_links_are_in_the_summary_escaped_and_point_nowhere(
    make_report: MakeReport, linked: Callable[[Report, str], Report], hostile: str
) -> None:
    markup = DATA.sub("", render_html(linked(make_report(10), hostile)))
    lineage = re.search(r'<ul class="lineage" id="lineage">\n<li>(.*)</li>\n<li>(.*)</li>\n</ul>', markup)
    assert lineage is not None
    assert lineage.group(1) == "rerun of nightly (report: gs://bucket/fanout/nightly/report.json)"
    assert lineage.group(2).startswith(
        "rerun as batch-demo-rerun-1, batch-demo-rerun-2 (reports: gs://bucket/fanout/batch-demo-rerun-1/report.json, "
        "/reports/&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    )
    assert "<img" not in markup and "\x1b" not in markup
    assert not re.search(r"<[a-z][^>]*\s(?:src|href)\s*=", markup, re.IGNORECASE)
    assert 'id="lineage"' not in render_html(make_report(10))


def test_a_page_of_a_batch_larger_than_a_page_holds_the_failures_first_and_says_so(
    make_report: MakeReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = make_report(300)
    failed = [item for item in report.items if not item.state.ok]
    assert 10 < len(failed) < 100
    assert shown_items(report, limit=300) is None  # a page holds every item of a batch no larger than a page
    shown = shown_items(report, limit=100)
    assert shown is not None and len(shown) == 100
    assert [item.index for item in shown] == sorted(item.index for item in shown)  # in spec order
    succeeded = [item for item in report.items if item.state.ok][: 100 - len(failed)]
    assert {item.key for item in shown} == {item.key for item in failed + succeeded}
    few = shown_items(report, limit=5)
    assert few is not None and [item.key for item in few] == sorted(
        (item.key for item in worst_first(failed, 5)), key=lambda key: int(key.rsplit("-", 1)[1])
    )

    monkeypatch.setattr(html_report, "PAGE_ITEMS", 100)
    html = render_html(report)
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    assert len(data["items"]) == 100 and data["report"]["summary"]["total"] == 300
    assert 'id="partial">This page holds 100 of the batch\'s 300 items' in html
    assert 'data-count="total" data-value="300">300</span>' in html  # the summary counts every item
