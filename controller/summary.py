"""Short renderings of a report: the Markdown for Prefect, the rows of the failed-items table, the CLI summary.

All of them answer the same question first: which items did not succeed, why, and what they printed last.
Log lines, reasons and keys are untrusted text, so every renderer escapes for its own medium.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from controller.report import BatchStatus, ItemResult, ItemState, Report

# Order in which non-succeeded items are listed: the ones that ran and broke come before the ones that were
# cancelled or never started, because after a cancelled batch thousands of the latter would hide the former.
_SEVERITY = {
    ItemState.FAILED: 0,
    ItemState.TIMED_OUT: 1,
    ItemState.CANCELLED: 2,
    ItemState.NOT_LAUNCHED: 3,
    ItemState.SUCCEEDED: 4,
}
# Rich styles for states, shared by the summary table and the live progress display.
STATE_STYLE = {
    ItemState.SUCCEEDED: "green",
    ItemState.FAILED: "red",
    ItemState.TIMED_OUT: "magenta",
    ItemState.CANCELLED: "yellow",
    ItemState.NOT_LAUNCHED: "bright_black",
}
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
    return state.value.replace("_", " ")


def failed_first(report: Report) -> list[ItemResult]:
    """The items that did not succeed, worst first (failed, timed out, cancelled, not launched), then by index."""
    return sorted(report.failed_items(), key=lambda item: (_SEVERITY[item.state], item.index))


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


def last_log_line(item: ItemResult, *, limit: int = _LOG_LINE_CHARS) -> str | None:
    """The item's last non-blank log line, made printable and cut to ``limit`` characters."""
    for raw in reversed(item.log_tail or []):
        if raw.strip():
            line = printable(raw.strip())
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return None


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


# Markdown ------------------------------------------------------------------------------------------------

_MD_ESCAPE = re.compile(r"([\\`*_\[\]~|#!])")


def _md(text: str) -> str:
    """Untrusted text as one line of inert Markdown: no HTML, no emphasis, no table breaks, no links."""
    text = printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_ESCAPE.sub(r"\\\1", text)


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
    if report_url:
        link = _md_link("report", report_url) or _md(report_url)
        lines += ["", f"Full report: {link}"]
    if report.problems:
        lines += ["", "### Problems", "", *(f"- {_md(problem)}" for problem in report.problems)]
    failed = failed_first(report)
    if failed:
        shown = failed[:max_failed]
        more = f" (first {len(shown):,} of {len(failed):,})" if len(shown) < len(failed) else ""
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
                _md(item.key),
                _md(item.job),
                state_label(item.state),
                "" if item.exit_code is None else str(item.exit_code),
                _md(item.reason or ""),
                _md(last_log_line(item) or ""),
                links,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def failed_rows(report: Report, *, limit: int = 500) -> list[dict[str, str | int | None]]:
    """Rows of the Prefect table artifact: one per item that did not succeed, worst first."""
    return [
        {
            "key": item.key,
            "job": item.job,
            "state": item.state.value,
            "exit_code": item.exit_code,
            "attempts": item.attempts,
            "reason": item.reason,
            "last_log_line": last_log_line(item),
            "console_url": item.console_url,
            "log_url": item.log_url,
        }
        for item in failed_first(report)[:limit]
    ]


# Terminal ------------------------------------------------------------------------------------------------


def print_summary(report: Report, console: Console, *, max_failed: int = 20) -> None:
    """The final summary on the CLI: status line, counts by state, then the first failed items."""
    summary = report.summary
    # Every value from the report goes in as Text, never as a markup string: "[red]" in a key stays literal.
    console.print(
        Text.assemble(
            ("Batch ", "bold"),
            (printable(report.batch_id), "bold"),
            ": ",
            (report.status.value, _STATUS_STYLE[report.status]),
            f" · {headline(report)} · {format_seconds(batch_duration(report))} · {summary.launches:,} launches",
        )
    )
    console.print(
        Text(
            f"project {printable(report.project)} · region {printable(report.region)} · "
            f"mode {printable(report.mode)} · spec {printable(report.spec_digest)}",
            style="dim",
        )
    )
    counts = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    counts.add_column("state")
    counts.add_column("items", justify="right")
    counts.add_column("share", justify="right")
    for state in ItemState:
        count = summary.by_state.get(state, 0)
        share = f"{count / summary.total:.1%}" if summary.total else "-"
        style = STATE_STYLE[state] if count else "dim"
        counts.add_row(Text(state_label(state), style=style), Text(f"{count:,}", style=style), share)
    counts.add_row(Text("total", style="bold"), Text(f"{summary.total:,}", style="bold"), "")
    console.print(counts)
    for problem in report.problems:
        console.print(Text.assemble(("problem: ", "bold red"), printable(problem)))
    failed = failed_first(report)
    if not failed:
        return
    shown = failed[:max_failed]
    table = Table(title="Items that did not succeed", title_justify="left", box=box.SIMPLE_HEAD, expand=False)
    table.add_column("key", overflow="fold")
    table.add_column("job")
    table.add_column("state")
    table.add_column("exit", justify="right")
    table.add_column("tries", justify="right")
    table.add_column("reason", overflow="fold")
    table.add_column("last log line", overflow="fold")
    for item in shown:
        table.add_row(
            Text(printable(item.key)),
            Text(printable(item.job)),
            Text(state_label(item.state), style=STATE_STYLE[item.state]),
            Text("" if item.exit_code is None else str(item.exit_code)),
            Text(str(item.attempts)),
            Text(printable(item.reason or "")),
            Text(last_log_line(item) or "", style="dim"),
        )
    console.print(table)
    if len(failed) > len(shown):
        console.print(Text(f"… and {len(failed) - len(shown):,} more; the full list is in the report.", style="dim"))
