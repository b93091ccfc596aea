"""render_html as text: the embedded data, the escaping, the Content-Security-Policy, no external references."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

from controller.html_report import render_html, script_json_chunks
from controller.report import ItemState, Report

MakeReport = Callable[..., Report]
DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.DOTALL)


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_report_json_is_embedded_once_and_round_trips(make_report: MakeReport) -> None:
    report = make_report(500)
    html = render_html(report)
    blocks = DATA.findall(html)
    assert len(blocks) == 1
    assert Report.from_json(blocks[0]) == report
    assert html.count('"key":"item-00042"') == 1


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
    for fact in ("demo-project", "europe-west1", "sha256:0123456789abcdef", "fanout.report/v1", "1h05m"):
        assert fact in html


def test_page_size_stays_close_to_the_compact_json(make_report: MakeReport) -> None:
    report = make_report(2000)
    overhead = len(render_html(report)) - sum(len(chunk) for chunk in script_json_chunks(report))
    assert overhead < 40_000  # template and summary; the data is the page
