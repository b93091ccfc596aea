"""Short renderings of a report: the Markdown for Prefect, the rows of the failed-items table, the CLI summary.

All of them answer the same question first: which items did not succeed, why, and what they printed last.
Log lines, reasons and keys are untrusted text, so every renderer escapes for its own medium.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Iterable
from urllib.parse import quote

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from controller.pricing import ESTIMATE_NOTE, PRICE_DATE, format_usd
from controller.report import BatchStatus, ItemResult, ItemState, Report

_STATUS_STYLE = {
    BatchStatus.SUCCEEDED: "bold green",
    BatchStatus.FAILED: "bold red",
    BatchStatus.CANCELLED: "bold yellow",
}
# C0/C1 controls (not tab) and the bidirectional overrides that can make a terminal show text out of order.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LOG_LINE_CHARS = 160


def plural(count: int, noun: str, many: str | None = None) -> str:
    """A count and its noun in words: "1 launch", "7 items", "2 executions" (``many`` for irregular nouns)."""
    return f"{count:,} {noun if count == 1 else many or noun + 's'}"


def state_label(state: ItemState) -> str:
    """How a state reads in prose: "timed out", "not launched"."""
    return state.label


def failed_first(report: Report, limit: int | None = None) -> list[ItemResult]:
    """The items that did not succeed, worst first (the states' rank, controller.states), then by index; with
    ``limit``, only the first that many, kept as the items stream by (never all of a large report)."""
    return worst_first(report.failed_items(), limit)


def worst_first(items: Iterable[ItemResult], limit: int | None = None) -> list[ItemResult]:
    """``items`` worst first (the states' rank), then by index; with ``limit``, only the first that many."""
    if limit is None:
        return sorted(items, key=_rank)
    return heapq.nsmallest(limit, items, key=_rank)


def _rank(item: ItemResult) -> tuple[int, int]:
    return item.state.rank, item.index


def format_seconds(seconds: float | None) -> str:
    """A duration for people: "42s", "8m01s", "2h03m", "1d04h"; "-" when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def printable(text: str) -> str:
    """Control characters shown as ``\\xNN`` so a log line cannot move the cursor or recolour a terminal."""
    return _CONTROL.sub(_escape_control, text)


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _failed_task_span(item: ItemResult) -> tuple[int, int]:
    """Where in ``log_tail`` the lines of the task that failed are (its last attempt): the whole tail when
    the tail is one task's, or when the failed task printed nothing that was kept."""
    whole = (0, len(item.log_tail or []))
    if not item.log_tail_groups or item.state.ok:
        return whole
    failed = min((t.index for t in item.tasks if t.state is item.state), default=None)
    span, start = whole, 0
    for group in item.log_tail_groups:
        if group.task_index == failed:
            span = (start, start + group.lines)
        start += group.lines
    return span


def _shortened(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis, at a space when one is in its second
    half: a word is broken only when it alone is that long."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def last_log_entry(item: ItemResult, *, limit: int = _LOG_LINE_CHARS) -> tuple[str, bool] | None:
    """The last non-blank line the item's failed task printed (any task's when it succeeded), made printable
    and cut to ``limit`` characters, and whether it was logged at ERROR severity or worse."""
    tail = item.log_tail or []
    errors = set(item.log_tail_errors or ())
    first, end = _failed_task_span(item)
    for position in range(end - 1, first - 1, -1):
        if raw := tail[position].strip():
            line = printable(raw)
            return _shortened(line, limit), position in errors
    return None


def last_log_line(item: ItemResult, *, limit: int = _LOG_LINE_CHARS) -> str | None:
    """``last_log_entry``'s line alone."""
    entry = last_log_entry(item, limit=limit)
    return entry[0] if entry else None


def batch_duration(report: Report) -> float:
    """The batch's wall time: the summary's if the collector measured it, else start to finish of the report."""
    if report.summary.duration_seconds is not None:
        return report.summary.duration_seconds
    return (report.finished_at - report.started_at).total_seconds()


def headline(report: Report) -> str:
    """One phrase for the outcome: "all 2,000 items succeeded" or "37 of 2,000 items did not succeed"."""
    summary = report.summary
    if summary.not_succeeded == 0:
        return f"all {summary.total:,} items succeeded"
    return f"{summary.not_succeeded:,} of {summary.total:,} items did not succeed"


def rerun_lines(report: Report) -> list[str]:
    """The batches linked to this one by reruns, in words, each medium escaping them: "rerun of B (report:
    L)" when this batch reruns another's items, "rerun as B1, B2 (reports: L1, L2)" when others rerun its."""
    lines = []
    if (parent := report.rerun_of) is not None:
        lines.append(f"rerun of {parent.batch_id} (report: {parent.report})")
    if report.reruns:
        ids = ", ".join(rerun.batch_id for rerun in report.reruns)
        where = ", ".join(rerun.report for rerun in report.reruns)
        lines.append(f"rerun as {ids} ({'report' if len(report.reruns) == 1 else 'reports'}: {where})")
    return lines


def cost_text(report: Report) -> str | None:
    """What the batch's tasks were billed for, and its estimated price, in one line; None in old reports."""
    cost = report.summary.cost
    if cost is None:
        return None
    return (
        f"{cost.vcpu_seconds:,.1f} vCPU-s, {cost.gib_seconds:,.1f} GiB-s, ~${format_usd(cost.cost_usd)} "
        f"({ESTIMATE_NOTE}, prices of {PRICE_DATE})"
    )


# Markdown ------------------------------------------------------------------------------------------------

_MD_ESCAPE = re.compile(r"([\\`*_\[\]~|#!])")


def _md(text: str) -> str:
    """Untrusted text as one line of inert Markdown: no HTML, no emphasis, no table breaks, no links."""
    text = printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_ESCAPE.sub(r"\\\1", text)


# The Prefect UI shows a Markdown table at the artifact's width and cuts off what is wider: a cell of free text
# (a reason, a log line, a long key) is cut to this many characters, at a space where one is near; the report
# and the failed-items table artifact hold the text whole.
_MD_CELL_CHARS = 60


def _md_cell(text: str) -> str:
    """Untrusted text as one narrow table cell: made printable and cut first, so an escape is never cut."""
    return _md(_shortened(printable(text), _MD_CELL_CHARS))


def _md_link(label: str, url: str | None) -> str:
    # Only web links: a report is data from many places and a javascript: URL must not become clickable.
    if not url or not url.startswith(("https://", "http://")):
        return ""
    return f"[{label}]({quote(url, safe=':/?#@!$&*+,;=%~')})"


def render_markdown(report: Report, *, max_failed: int = 50, report_url: str | None = None) -> str:
    """The Prefect markdown artifact: status, counts, duration, and a table of the first failed items."""
    summary = report.summary
    lines = [
        f"## Batch {_md(report.batch_id)}: {report.status.value}",
        "",
        f"**{headline(report)}** · duration {format_seconds(batch_duration(report))} · {summary.launches:,} launches",
        "",
        "| State | Items |",
        "|---|---:|",
        *(f"| {state_label(state)} | {summary.by_state.get(state, 0):,} |" for state in ItemState),
        f"| **total** | **{summary.total:,}** |",
        "",
        f"Project {_md(report.project)}, region {_md(report.region)}, mode {_md(report.mode)}, "
        f"spec {_md(report.spec_digest)}, started {report.started_at.isoformat()}.",
    ]
    if cost := cost_text(report):
        lines += ["", f"Cost: {_md(cost)}"]
    for line in rerun_lines(report):
        lines += ["", _md(line[0].upper() + line[1:])]
    if report_url:
        link = _md_link("report", report_url) or _md(report_url)
        lines += ["", f"Full report: {link}"]
    if report.problems:
        lines += ["", "### Problems", "", *(f"- {_md(problem)}" for problem in report.problems)]
    shown = failed_first(report, max_failed)
    if shown:
        failed = summary.not_succeeded
        more = f" (first {len(shown):,} of {failed:,})" if len(shown) < failed else ""
        lines += [
            "",
            f"### Items that did not succeed{more}",
            "",
            "| Key | Job | State | Exit | Reason | Last log line | Links |",
            "|---|---|---|---:|---|---|---|",
        ]
        for item in shown:
            links = " ".join(
                link for link in (_md_link("execution", item.console_url), _md_link("logs", item.log_url)) if link
            )
            cells = [
                _md_cell(item.key),
                _md_cell(item.job),
                state_label(item.state),
                "" if item.exit_code is None else str(item.exit_code),
                _md_cell(item.reason or ""),
                _md_log_line(item, limit=_MD_CELL_CHARS),
                links,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Longer text is cut to {_MD_CELL_CHARS} characters here; the report has it whole."]
    return "\n".join(lines) + "\n"


def _md_log_line(item: ItemResult, *, limit: int = _LOG_LINE_CHARS) -> str:
    """The last log line as Markdown, led by a bold ERROR when it was logged at that severity or worse."""
    entry = last_log_entry(item, limit=limit)
    if entry is None:
        return ""
    return ("**ERROR** " if entry[1] else "") + _md(entry[0])


def _web_url(url: str | None) -> str | None:
    return url if url and url.startswith(("https://", "http://")) else None


def failed_rows(report: Report, *, limit: int = 500) -> list[dict[str, str | int | None]]:
    """Rows of the Prefect table artifact: one per item that did not succeed, worst first.

    The Prefect UI renders each cell as Markdown, so text from a task is escaped as in ``render_markdown``
    and only web URLs are kept.
    """
    return [
        {
            "key": _md(item.key),
            "job": _md(item.job),
            "state": item.state.value,
            "exit_code": item.exit_code,
            "attempts": item.attempts,
            "reason": _md(item.reason) if item.reason is not None else None,
            "last_log_line": _md_log_line(item) or None,
            "console_url": _web_url(item.console_url),
            "log_url": _web_url(item.log_url),
        }
        for item in failed_first(report, limit)
    ]


# Terminal ------------------------------------------------------------------------------------------------


def failure_groups(report: Report) -> list[tuple[int, str]]:
    """Items that did not succeed, counted by why, most common first: ``(97, "failed: exit 3 after 2 attempts")``.

    A failure that exited is grouped by its exit code and attempts, whatever else its reason says; other
    outcomes by their state and reason.
    """
    groups: Counter[str] = Counter()
    for item in report.failed_items():
        state = state_label(item.state)
        if item.state is ItemState.FAILED and item.exit_code is not None:
            groups[f"{state}: exit {item.exit_code} after {plural(item.attempts, 'attempt')}"] += 1
        else:
            groups[f"{state}: {printable(item.reason or 'no reason recorded')}"] += 1
    return [(count, why) for why, count in groups.most_common()]


def _item_cell(item: ItemResult) -> Text:
    cell = Text(printable(item.key))
    if item.label:
        cell.append("\n" + printable(item.label), style="dim")
    return cell


def print_summary(report: Report, console: Console, *, max_failed: int = 20, max_groups: int = 10) -> None:
    """The final summary on the CLI: status line, counts by state, why items failed, the first failed items.

    Everything fits 80 columns: long cells wrap between words, and only a word longer than its column (a
    path, a URL) is folded.
    """
    summary = report.summary
    # Every value from the report goes in as Text, never as a markup string: "[red]" in a key stays literal.
    console.print(
        Text.assemble(
            ("Batch ", "bold"),
            (printable(report.batch_id), "bold"),
            ": ",
            (report.status.value, _STATUS_STYLE[report.status]),
            f" · {headline(report)} · {format_seconds(batch_duration(report))} · "
            f"{plural(summary.launches, 'launch', 'launches')}",
        )
    )
    console.print(
        Text(
            f"project {printable(report.project)} · region {printable(report.region)} · "
            f"mode {printable(report.mode)} · spec {printable(report.spec_digest[:12])}",
            style="dim",
        )
    )
    if cost := cost_text(report):
        console.print(Text(f"cost {cost}", style="dim"))
    for line in rerun_lines(report):
        console.print(Text(printable(line)))
    console.print(_counts_table(report))
    for problem in report.problems:
        console.print(Text.assemble(("problem: ", "bold red"), printable(problem)))
    shown = failed_first(report, max_failed)
    if not shown:
        return
    groups = failure_groups(report)
    console.print(Text("Why items did not succeed", style="bold"))
    why = Table.grid(padding=(0, 1))
    why.add_column(justify="right", no_wrap=True)
    why.add_column()
    for count, reason in groups[:max_groups]:
        why.add_row(plural(count, "item"), Text(reason))
    if len(groups) > max_groups:
        why.add_row("…", Text(f"and {plural(len(groups) - max_groups, 'other reason')}", style="dim"))
    console.print(Padding(why, (0, 0, 0, 2)))
    console.print(_failed_table(shown, console.width))
    if summary.not_succeeded > len(shown):
        more = summary.not_succeeded - len(shown)
        console.print(Text(f"… and {more:,} more; the full list is in the report.", style="dim"))


def _counts_table(report: Report) -> Table:
    summary = report.summary
    counts = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    counts.add_column("state")
    counts.add_column("items", justify="right")
    counts.add_column("share", justify="right")
    for state in ItemState:
        count = summary.by_state.get(state, 0)
        share = f"{count / summary.total:.1%}" if summary.total else "-"
        style = state.style if count else "dim"
        counts.add_row(Text(state_label(state), style=style), Text(f"{count:,}", style=style), share)
    counts.add_row(Text("total", style="bold"), Text(f"{summary.total:,}", style="bold"), "")
    return counts


def _log_cell(item: ItemResult) -> Text:
    entry = last_log_entry(item)
    if entry is None:
        return Text("")
    line, error = entry
    return Text.assemble(("ERROR ", "bold red"), (line, "red")) if error else Text(line, style="dim")


def _failed_table(items: list[ItemResult], width: int) -> Table:
    table = Table(title="Items that did not succeed", title_justify="left", box=box.SIMPLE_HEAD, expand=False)
    # The key column is as wide as the longest key shown, up to a third of the line (so a wide terminal
    # shows long keys whole), and the last log line takes what is left. Reasons are in the groups above.
    widest = max(26, width // 3)
    key_width = min(max(len(printable(item.key)) for item in items), widest)
    table.add_column("item", min_width=key_width, max_width=widest, overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("exit", justify="right", no_wrap=True)
    table.add_column("last log line", overflow="fold")
    for item in items:
        table.add_row(
            _item_cell(item),
            Text(state_label(item.state), style=item.state.style),
            Text("" if item.exit_code is None else str(item.exit_code)),
            _log_cell(item),
        )
    return table
