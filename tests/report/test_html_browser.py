"""report.html in a real browser: Debian's headless Chromium, driven over the DevTools protocol (no npm).

Run alone with: .venv/bin/python -m pytest -m browser tests/report -s   (prints the measured load time)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bench.chromium import Browser
from controller.html_report import render_html
from controller.report import ItemState, Report
from controller.summary import failed_first, printable

pytestmark = pytest.mark.browser

MakeReport = Callable[..., Report]
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
LOAD_BUDGET_S = 10.0  # a hang guard, not a benchmark: the measured number is in docs/report.md


@pytest.fixture(scope="module")
def big_page(tmp_path_factory: pytest.TempPathFactory, make_report: MakeReport) -> tuple[Report, Path]:
    report = make_report(10_000, seed=2026)
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return report, path


def rows_on_page(browser: Browser) -> list[dict[str, str]]:
    return browser.evaluate(
        """[...document.querySelectorAll('#items tbody tr.item')].map((tr) => ({
            key: tr.dataset.key, state: tr.dataset.state, exit: tr.children[4].textContent}))"""
    )


def set_input(browser: Browser, selector: str, value: str, event: str) -> None:
    browser.evaluate(
        f"""(() => {{ const node = document.querySelector({json.dumps(selector)});
        node.value = {json.dumps(value)}; node.dispatchEvent(new Event({json.dumps(event)})); }})()"""
    )


def pixels_by_state(browser: Browser) -> dict[str, int]:
    """How many canvas pixels have (nearly) each outcome's colour."""
    return browser.evaluate(
        """(() => {
        const canvas = document.getElementById('timeline');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const probe = document.createElement('canvas').getContext('2d');
        const out = {};
        for (const state of ['succeeded', 'failed', 'timed_out']) {
          probe.fillStyle = getComputedStyle(document.documentElement).getPropertyValue('--' + state).trim();
          probe.fillRect(0, 0, 1, 1);
          const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
          let n = 0;
          for (let i = 0; i < data.length; i += 4) {
            if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 12) n++;
          }
          out[state] = n;
        }
        return out;
        })()"""
    )


def test_ten_thousand_items_load_fast_show_the_summary_and_failed_rows_first(
    browser: Browser, big_page: tuple[Report, Path]
) -> None:
    report, path = big_page
    browser.open_page()
    elapsed = browser.load(path)
    ready_ms = browser.evaluate("window.fanoutReport.readyMs")
    size_mb = path.stat().st_size / 1e6
    print(
        f"\n10,000-item report.html ({size_mb:.1f} MB): ready {elapsed:.2f}s after navigate, readyMs={ready_ms:.0f}"
    )
    assert elapsed < LOAD_BUDGET_S
    assert browser.problems() == []
    assert all(url.startswith("file://") for url in browser.requested_urls()), browser.requested_urls()

    counts = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('[data-count]')]"
        ".map((n) => [n.dataset.count, n.textContent]))"
    )
    expected = {state.value: f"{report.summary.by_state[state]:,}" for state in ItemState}
    assert counts == {"total": "10,000", **expected}
    assert browser.evaluate("document.getElementById('batch-status').textContent") == "failed"
    headline = browser.evaluate("document.getElementById('headline').textContent")
    assert headline == f"{report.summary.not_succeeded:,} of 10,000 items did not succeed"

    rows = rows_on_page(browser)
    worst = failed_first(report)[:100]
    assert [row["key"] for row in rows] == [item.key for item in worst]
    assert [row["state"] for row in rows] == [item.state.value for item in worst]
    assert [row["exit"] for row in rows] == ["" if i.exit_code is None else str(i.exit_code) for i in worst]
    assert browser.evaluate("document.getElementById('range').textContent") == "rows 1–100 of 10,000"

    # The timeline drew bars in the outcome colours: count canvas pixels close to each state's colour.
    drawn = pixels_by_state(browser)
    assert all(pixels > 0 for pixels in drawn.values()), drawn
    lanes = browser.evaluate("window.fanoutReport.lanes")
    assert 1 < lanes < 10_000


def test_hostile_text_is_shown_as_text_and_never_runs(
    browser: Browser, big_page: tuple[Report, Path], hostile: str
) -> None:
    report, path = big_page
    target = next(
        i for i in report.items if i.state is ItemState.FAILED and i.log_tail and hostile in i.log_tail
    )
    browser.open_page()
    browser.load(path)
    set_input(browser, "#search", target.key, "input")
    browser.wait_for("document.querySelectorAll('#items tbody tr.item').length === 1")
    browser.evaluate("document.querySelector('#items tbody tr.item').click()")
    log = browser.evaluate("document.querySelector('#items tbody tr.detail pre').textContent")
    # Shown as written, minus terminal colour codes; the markup in it is text.
    assert log == "\n".join(ANSI.sub("", line) for line in target.log_tail or [])
    assert "</script><img src=x onerror=alert(1)> [red]markup[/red] | `tick` <!-- red" in log
    reason = browser.evaluate("document.querySelector('#items tbody tr.item td.reason').textContent")
    assert ANSI.sub("", hostile) in reason
    problems = browser.evaluate("[...document.querySelectorAll('#problems li')].map((li) => li.textContent)")
    assert problems == [printable(problem) for problem in report.problems]
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert browser.evaluate("document.querySelectorAll('script').length") == 2
    assert browser.problems() == []


def test_filter_by_state_and_text_sort_and_page(browser: Browser, big_page: tuple[Report, Path]) -> None:
    report, path = big_page
    browser.open_page()
    browser.load(path)
    timed_out = report.summary.by_state[ItemState.TIMED_OUT]
    set_input(browser, "#state-filter", "timed_out", "change")
    assert {row["state"] for row in rows_on_page(browser)} == {"timed_out"}
    assert browser.evaluate("document.getElementById('range').textContent") == f"rows 1–100 of {timed_out:,}"

    # The count buttons in the summary filter too; pressing the pressed one again shows everything.
    browser.evaluate("document.querySelector('.counts button[data-state=failed]').click()")
    assert browser.evaluate("document.getElementById('state-filter').value") == "failed"
    browser.evaluate("document.querySelector('.counts button[data-state=failed]').click()")
    assert browser.evaluate("document.getElementById('state-filter').value") == "all"

    browser.evaluate("document.querySelector('th[data-sort=key]').click()")
    browser.evaluate("document.querySelector('th[data-sort=key]').click()")
    assert rows_on_page(browser)[0]["key"] == "item-09999"
    assert (
        browser.evaluate("document.querySelector('th[data-sort=key]').getAttribute('aria-sort')")
        == "descending"
    )
    browser.evaluate("document.getElementById('next').click()")
    assert browser.evaluate("document.getElementById('range').textContent") == "rows 101–200 of 10,000"
    assert rows_on_page(browser)[0]["key"] == "item-09899"

    # Free text searches log tails too: every failed item printed a traceback.
    set_input(browser, "#search", "traceback: valueerror", "input")
    failed = report.summary.by_state[ItemState.FAILED]
    browser.wait_for(f"document.getElementById('range').textContent === 'rows 1–100 of {failed:,}'")
    assert browser.problems() == []


def test_a_clean_small_batch_renders_without_errors(
    browser: Browser, make_report: MakeReport, tmp_path: Path
) -> None:
    report = make_report(20, states=[ItemState.SUCCEEDED])
    # A bell and a right-to-left override: invisible or misleading if shown raw, so they become escapes.
    first = replace(report.items[0], log_tail=["bell\x07", "rtl\u202eevil"])
    report = report.model_copy(update={"problems": [], "items": [first, *report.items[1:]]})
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    browser.open_page()
    browser.load(path)
    assert browser.evaluate("document.getElementById('headline').textContent") == "all 20 items succeeded"
    assert len(rows_on_page(browser)) == 20
    assert browser.evaluate("document.getElementById('problems')") is None
    browser.evaluate("document.querySelector('tr.item[data-key=item-00000]').click()")
    log = browser.evaluate("document.querySelector('#items tbody tr.detail pre').textContent")
    assert log == "bell\\x07\nrtl\\u202eevil"
    assert browser.problems() == []


def test_log_tail_groups_number_attempts_as_cloud_run_does(
    browser: Browser, make_report: MakeReport, tmp_path: Path
) -> None:
    """A task's own lines say ``attempt 0 starting`` (CLOUD_RUN_TASK_ATTEMPT counts from 0): the group
    headers above them count the same way."""
    from controller.report import TailGroup

    report = make_report(3, states=[ItemState.FAILED])
    tail = ["attempt 0 starting", "boom", "attempt 1 starting", "boom again"]
    groups = [TailGroup(task_index=0, attempt=0, lines=2), TailGroup(task_index=0, attempt=1, lines=2)]
    first = replace(report.items[0], log_tail=tail, log_tail_groups=groups, log_tail_errors=None)
    report = report.model_copy(update={"items": [first, *report.items[1:]]})
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    browser.open_page()
    browser.load(path)
    browser.evaluate(f"document.querySelector('tr.item[data-key={first.key}]').click()")
    log = browser.evaluate("document.querySelector('#items tbody tr.detail pre').textContent")
    assert log.splitlines() == [
        "── task 0, attempt 0 ──", "attempt 0 starting", "boom",
        "── task 0, attempt 1 ──", "attempt 1 starting", "boom again",
    ]  # fmt: skip


def test_the_batch_it_reruns_and_its_reruns_are_shown_as_text(
    browser: Browser, make_report: MakeReport, linked: Callable[[Report, str], Report], tmp_path: Path, hostile: str
) -> None:
    report = linked(make_report(5, states=[ItemState.FAILED]), hostile)
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    browser.open_page()
    browser.load(path)
    shown = browser.evaluate("[...document.querySelectorAll('#lineage li')].map((li) => li.textContent)")
    assert shown == [
        "rerun of nightly (report: gs://bucket/fanout/nightly/report.json)",
        "rerun as batch-demo-rerun-1, batch-demo-rerun-2 (reports: gs://bucket/fanout/batch-demo-rerun-1/report.json, "
        f"/reports/{printable(hostile)}/report.json)",
    ]
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert browser.problems() == []


def test_results_have_a_column_cut_short_as_text_and_the_filter_finds_them(
    browser: Browser, make_report: MakeReport, tmp_path: Path, hostile: str
) -> None:
    report = make_report(4, states=[ItemState.SUCCEEDED])
    long_result = {"words": {hostile: 2}, "total": 2, "padding": "x" * 200}
    items = [
        replace(report.items[0], result={"count": 42}),
        replace(report.items[1], result=long_result),
        replace(report.items[2], result_uri="gs://b/r/2/0.json"),
    ]
    report = report.model_copy(update={"problems": [], "items": [*items, report.items[3]]})
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    browser.open_page()
    browser.load(path)
    assert browser.evaluate("[...document.querySelectorAll('#items thead th')].map((th) => th.textContent)")[-2:] == [
        "Result",
        "Links",
    ]
    cells = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#items tbody tr.item')]"
        ".map((tr) => [tr.dataset.key, tr.querySelector('td.result-cell').textContent]))"
    )
    assert cells["item-00000"] == '{"count":42}'
    assert len(cells["item-00001"]) == 60 and cells["item-00001"].endswith("…")
    assert cells["item-00001"].startswith('{"words":{"</script><img src=x onerror=alert(1)>')  # text, not markup
    assert cells["item-00002"] == "(beside the report)"
    assert cells["item-00003"] == ""
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    set_input(browser, "#search", '"count":42', "input")
    browser.wait_for("document.querySelectorAll('#items tbody tr.item').length === 1")
    assert [row["key"] for row in rows_on_page(browser)] == ["item-00000"]
    browser.screenshot(tmp_path / "results.png")
    assert browser.problems() == []


def test_an_items_result_is_folded_in_its_detail_row_and_shown_as_text(
    browser: Browser, make_report: MakeReport, tmp_path: Path, hostile: str
) -> None:
    report = make_report(3, states=[ItemState.SUCCEEDED])
    result = {"words": {hostile: 2}, "total": 2}
    items = [replace(report.items[0], result=result), replace(report.items[1], result_uri="gs://b/r/1/0.json")]
    report = report.model_copy(update={"problems": [], "items": [*items, report.items[2]]})
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    browser.open_page()
    browser.load(path)
    browser.evaluate("document.querySelector('tr.item[data-key=item-00000]').click()")
    folded = browser.evaluate("document.querySelector('tr.detail details.result').open")
    shown = browser.evaluate("document.querySelector('tr.detail details.result pre').textContent")
    assert folded is False
    assert json.loads(shown) == result  # JSON as written: control characters stay escaped
    assert "</script><img src=x onerror=alert(1)>" in shown
    browser.evaluate("document.querySelector('tr.item[data-key=item-00001]').click()")
    metas = browser.evaluate("[...document.querySelectorAll('tr.detail .meta')].map((d) => d.textContent)")
    assert "result (over 64 KiB): gs://b/r/1/0.json" in metas
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert browser.problems() == []


def test_a_large_batch_shows_running_items_over_time_and_lists_those_of_a_moment(
    browser: Browser, make_report: MakeReport, tmp_path: Path
) -> None:
    report = make_report(25_000, seed=11)
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    browser.open_page()
    browser.load(path)
    info = browser.evaluate("window.fanoutReport")
    assert info["aggregated"] is True
    assert info["lanes"] is None
    # The peak of the chart is at least the batch's true peak concurrency (a pixel column spans a moment).
    moments = sorted(
        [(item.start_time, 1) for item in report.items if item.start_time]
        + [(item.end_time or item.start_time, -1) for item in report.items if item.start_time],
        key=lambda moment: (moment[0], -moment[1]),
    )
    running = true_peak = 0
    for _, step in moments:
        running += step
        true_peak = max(true_peak, running)
    assert true_peak <= info["peak"] < true_peak * 1.2
    assert all(pixels > 0 for pixels in pixels_by_state(browser).values())

    # Hover the middle of the chart: the tip counts the items running there; a click lists exactly those.
    point = browser.evaluate(
        """(() => { const box = document.getElementById('timeline').getBoundingClientRect();
        return [box.left + box.width / 2, box.top + 150]; })()"""
    )
    def pointer(kind: str) -> None:
        browser.evaluate(
            f"document.getElementById('timeline').dispatchEvent(new MouseEvent({kind!r}, "
            f"{{clientX: {point[0]}, clientY: {point[1]}, bubbles: true}}))"
        )

    pointer("mousemove")
    tip = browser.evaluate("document.getElementById('tip').textContent")
    pointer("click")
    found = re.search(r": ([\d,]+) items running", tip)
    assert found, tip
    count = int(found.group(1).replace(",", ""))
    assert count > 0
    by_state = {state: int(n.replace(",", "")) for n, state in re.findall(r"^([\d,]+) (\w[\w ]*)$", tip, re.M)}
    assert sum(by_state.values()) == count
    assert browser.evaluate("document.getElementById('range').textContent") == f"rows 1–100 of {count:,}"
    assert browser.evaluate("document.getElementById('at').hidden") is False
    shown = {row["state"].replace("_", " ") for row in rows_on_page(browser)}
    assert shown <= set(by_state)
    browser.evaluate("document.getElementById('at').click()")
    assert browser.evaluate("document.getElementById('range').textContent") == "rows 1–100 of 25,000"
    assert browser.problems() == []
