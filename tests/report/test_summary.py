from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from rich.console import Console

from controller.report import ItemState, Report
from controller.summary import (
    failed_first,
    failed_rows,
    failure_groups,
    format_seconds,
    last_log_line,
    plural,
    print_summary,
    printable,
    render_markdown,
)

MakeReport = Callable[..., Report]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.25, "0.2s"),
        (42, "42s"),
        (481, "8m01s"),
        (7380, "2h03m"),
        (100800, "1d04h"),
        (59.6, "1m00s"),
    ],
)
def test_format_seconds(seconds: float | None, text: str) -> None:
    assert format_seconds(seconds) == text


def test_printable_neutralises_terminal_controls_but_keeps_tabs() -> None:
    assert printable("a\x1b[31mb\tc\u202ed\n") == "a\\x1b[31mb\tc\\u202ed\\x0a"


def test_failed_first_puts_failures_before_cancelled_and_not_launched(make_report: MakeReport) -> None:
    report = make_report(400)
    order = [item.state for item in failed_first(report)]
    severity = [ItemState.FAILED, ItemState.TIMED_OUT, ItemState.CANCELLED, ItemState.NOT_LAUNCHED]
    assert order == sorted(order, key=severity.index)
    assert len(order) == report.summary.not_succeeded
    failed = [item.index for item in failed_first(report) if item.state is ItemState.FAILED]
    assert failed == sorted(failed)


def test_last_log_line_skips_blank_lines_and_truncates(make_report: MakeReport) -> None:
    item = make_report(1, states=[ItemState.FAILED]).items[0]
    assert last_log_line(item) == "Traceback: ValueError: bad input in item-00000"
    long_item = replace(item, log_tail=["x" * 500, "   "])
    line = last_log_line(long_item, limit=20)
    assert line is not None
    assert len(line) == 20
    assert line.endswith("…")
    assert last_log_line(replace(item, log_tail=None)) is None


def test_markdown_has_counts_status_location_and_failed_table(make_report: MakeReport) -> None:
    report = make_report(2000)
    text = render_markdown(report, max_failed=10, report_url="gs://bucket/batch-demo/report.html")
    summary = report.summary
    assert f"## Batch batch-demo: {report.status.value}" in text
    assert f"**{summary.not_succeeded:,} of 2,000 items did not succeed**" in text
    assert f"| failed | {summary.by_state[ItemState.FAILED]:,} |" in text
    assert f"| timed out | {summary.by_state[ItemState.TIMED_OUT]:,} |" in text
    assert "duration 1h05m" in text
    assert "Full report: gs://bucket/batch-demo/report.html" in text
    assert f"(first 10 of {summary.not_succeeded:,})" in text
    rows = [line for line in text.splitlines() if line.startswith("| item-")]
    assert [row.split(" | ")[0] for row in rows] == [f"| {item.key}" for item in failed_first(report)[:10]]
    first = failed_first(report)[0]
    assert f"[execution]({first.console_url})" in rows[0]


def test_markdown_escapes_untrusted_text(make_report: MakeReport) -> None:
    report = make_report(1, states=[ItemState.FAILED], hostile_every=1)
    text = render_markdown(report)
    assert "<img" not in text
    assert "</script>" not in text
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in text
    # Every table row keeps its seven cells: escaped pipes do not split a cell.
    row = next(line for line in text.splitlines() if line.startswith("| item-"))
    assert len(re.split(r"(?<!\\)\|", row)) == 9
    assert "\x1b" not in text


def test_markdown_failed_table_stays_narrow_with_long_text_cut_at_a_word(make_report: MakeReport) -> None:
    # The Prefect UI cuts off a table wider than the artifact: long reasons, log lines and keys are shortened.
    report = make_report(1, states=[ItemState.FAILED])
    words = " ".join(f"word{i:03d}" for i in range(80))  # 639 characters, no Markdown to escape
    item = replace(report.items[0], key="k" + "-long" * 40, reason="reason " + words, log_tail=["log " + words])
    text = render_markdown(report.model_copy(update={"items": [item]}))
    row = next(line for line in text.splitlines() if line.startswith("| k-long"))
    key, job, state, _exit, reason, log_line, _links = (cell.strip() for cell in row.strip("|").split(" | "))
    assert (job, state) == (item.job, "failed")
    for cell in (key, reason, log_line):
        assert len(cell) <= 60 and cell.endswith("…"), cell
    assert reason.startswith("reason word000 ") and re.fullmatch(r"reason( word\d{3})+…", reason), reason
    assert re.fullmatch(r"log( word\d{3})+…", log_line), log_line
    assert len(re.sub(r"\]\([^)]*\)", "]", row)) < 250  # as shown: a link reads as its label
    assert words not in text
    assert "Longer text is cut to 60 characters here; the report has it whole." in text
    # The failed-items table artifact keeps the text whole.
    assert failed_rows(report.model_copy(update={"items": [item]}))[0]["reason"] == "reason " + words


def test_markdown_links_only_web_urls(make_report: MakeReport) -> None:
    report = make_report(1, states=[ItemState.FAILED])
    item = replace(report.items[0], console_url="javascript:alert(1)", log_url=None)
    text = render_markdown(report.model_copy(update={"items": [item]}))
    assert "javascript:" not in text
    assert "[execution]" not in text


def test_markdown_for_a_clean_batch_has_no_failed_table(make_report: MakeReport) -> None:
    report = make_report(5, states=[ItemState.SUCCEEDED])
    text = render_markdown(report.model_copy(update={"problems": []}))
    assert "**all 5 items succeeded**" in text
    assert "did not succeed" not in text


def test_failed_rows_are_json_friendly_and_limited(make_report: MakeReport) -> None:
    report = make_report(1000)
    rows = failed_rows(report, limit=7)
    assert [row["key"] for row in rows] == [item.key for item in failed_first(report)[:7]]
    assert set(rows[0]) == {
        "key",
        "job",
        "state",
        "exit_code",
        "attempts",
        "reason",
        "last_log_line",
        "console_url",
        "log_url",
    }
    assert all(isinstance(value, str | int | type(None)) for row in rows for value in row.values())
    assert len(failed_rows(report)) == report.summary.not_succeeded


def test_print_summary_shows_counts_and_first_failed_items(make_report: MakeReport) -> None:
    report = make_report(300, hostile_every=3)
    out = io.StringIO()
    print_summary(report, Console(file=out, width=200, color_system=None), max_failed=5)
    text = out.getvalue()
    summary = report.summary
    assert f"Batch batch-demo: failed · {summary.not_succeeded} of 300 items did not succeed" in text
    assert re.search(rf"failed\s+{summary.by_state[ItemState.FAILED]}\s", text)
    assert re.search(r"total\s+300\s", text)
    for item in failed_first(report)[:5]:
        assert item.key in text
    assert failed_first(report)[5].key not in text
    assert f"… and {summary.not_succeeded - 5} more" in text
    # Rich markup inside data is printed literally, and escape sequences cannot reach the terminal.
    assert "[red]markup[/red]" in text
    assert "\x1b" not in text


def test_print_summary_in_colour_keeps_data_escaped(make_report: MakeReport, hostile: str) -> None:
    report = make_report(3, states=[ItemState.FAILED], hostile_every=1)
    out = io.StringIO()
    print_summary(report, Console(file=out, width=300, force_terminal=True))
    text = out.getvalue()
    assert "\\x1b[31mred" in text
    assert hostile.partition(" [red]")[0] in text


def test_failed_items_are_grouped_by_why_before_the_rows(make_report: MakeReport) -> None:
    report = make_report(300)
    groups = failure_groups(report)
    assert sum(count for count, _ in groups) == report.summary.not_succeeded
    assert [count for count, _ in groups] == sorted((count for count, _ in groups), reverse=True)
    exited = [item for item in report.failed_items() if item.state is ItemState.FAILED and item.exit_code == 137]
    attempts = {item.attempts for item in exited}
    for tries in attempts:
        count = sum(1 for item in exited if item.attempts == tries)
        assert (count, f"failed: exit 137 after {tries} attempt{'s' if tries != 1 else ''}") in groups
    out = io.StringIO()
    print_summary(report, Console(file=out, width=80, color_system=None), max_failed=5)
    text = out.getvalue()
    why = text.index("Why items did not succeed")
    assert why < text.index("Items that did not succeed")
    count, reason = groups[0]
    assert f"{count} items {reason}" in " ".join(text[why:].split())


def test_summary_fits_80_columns_shows_labels_and_breaks_no_word(make_report: MakeReport) -> None:
    report = make_report(300)
    out = io.StringIO()
    print_summary(report, Console(file=out, width=80, color_system=None), max_failed=8)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    text = out.getvalue()
    for item in failed_first(report)[:8]:
        assert f" {item.key} " in text  # the key on one line, whole
        assert item.label is not None
        assert item.label in text
    # Every short word of a shown log line is whole on some line; only a word longer than its column folds.
    words = set(" ".join(lines).split())
    for item in failed_first(report)[:8]:
        line = last_log_line(item)
        assert line is not None
        assert {word for word in line.split() if len(word) <= 20} <= words, line
    assert "(s)" not in text
    assert "1 launches" not in text


def test_a_wide_console_shows_long_keys_and_labels_whole(make_report: MakeReport) -> None:
    """At 200 columns a 40-character key and its label are not wrapped into a 26-character column."""
    from dataclasses import replace

    report = make_report(3, states=[ItemState.FAILED])
    key, label = "nightly-shard-0042-of-0100-europe-west1", "the long label of shard forty-two, europe"
    first = replace(report.items[0], key=key, label=label)
    report = report.model_copy(update={"items": [first, *report.items[1:]]})
    out = io.StringIO()
    print_summary(report, Console(file=out, width=200, color_system=None))
    lines = out.getvalue().splitlines()
    assert any(f" {key} " in line for line in lines), lines
    assert any(label in line for line in lines), lines


def test_counts_are_in_words() -> None:
    assert plural(1, "item") == "1 item"
    assert plural(7, "item") == "7 items"
    assert plural(1, "launch", "launches") == "1 launch"
    assert plural(2_000, "launch", "launches") == "2,000 launches"


def test_one_launch_reads_in_the_singular(make_report: MakeReport) -> None:
    report = make_report(1, states=[ItemState.SUCCEEDED])
    report = report.model_copy(update={"summary": report.summary.model_copy(update={"launches": 1})})
    out = io.StringIO()
    print_summary(report, Console(file=out, width=80, color_system=None))
    assert "· 1 launch" in out.getvalue()
    assert "1 launches" not in out.getvalue()


def test_the_summary_names_the_batch_it_reruns_and_the_reruns_of_it(
    make_report: MakeReport, linked: Callable[[Report, str], Report], hostile: str
) -> None:
    report = linked(make_report(4, states=[ItemState.FAILED]), hostile)
    out = io.StringIO()
    print_summary(report, Console(file=out, width=400, color_system=None))
    lines = out.getvalue().splitlines()
    assert "rerun of nightly (report: gs://bucket/fanout/nightly/report.json)" in lines
    assert (
        "rerun as batch-demo-rerun-1, batch-demo-rerun-2 (reports: gs://bucket/fanout/batch-demo-rerun-1/report.json, "
        f"/reports/{printable(hostile)}/report.json)"
    ) in lines
    assert "\x1b" not in out.getvalue()

    markdown = render_markdown(report)
    assert "Rerun of nightly (report: gs://bucket/fanout/nightly/report.json)" in markdown
    assert "Rerun as batch-demo-rerun-1, batch-demo-rerun-2 (reports: " in markdown
    assert "<img" not in markdown and "&lt;img src=x onerror=alert(1)&gt; \\[red\\]markup" in markdown


def test_a_batch_without_reruns_says_nothing_of_them(make_report: MakeReport) -> None:
    out = io.StringIO()
    print_summary(make_report(4), Console(file=out, width=200, color_system=None))
    assert "rerun" not in out.getvalue() + render_markdown(make_report(4))
