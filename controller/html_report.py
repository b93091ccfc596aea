"""``report.html``: one self-contained page per batch, readable offline and from a bucket.

The summary is rendered here, so it shows even without JavaScript; the timeline and the item table are drawn
by the page's inline script from the report embedded once in a ``<script type="application/json">``, in a
compact lossless form (the *page data*, below) that a browser parses in a fraction of the time the canonical
report.json would take: at 100,000 items the page must be usable within two seconds.
A Content-Security-Policy built from hashes of the page's own style and script forbids every network fetch
and every script that is not ours, so text that slipped through escaping still could not run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html import escape
from importlib import resources
from typing import Any

from controller.report import ItemResult, Report, TaskResult
from controller.states import ItemState
from controller.summary import (
    batch_duration,
    cost_text,
    format_seconds,
    headline,
    printable,
    rerun_lines,
    state_label,
    worst_first,
)

# The most items one page embeds: a page of 100,000 synthetic items took 4.6-5.1 s to be ready on the loaded
# 2-core machine (docs/benchmarks.md), a million-item page would be ten times that and a 400 MB file; half of
# 100,000 keeps a million-item batch's page under its 3 s.
PAGE_ITEMS = 50_000
_PLACEHOLDER = re.compile(r"\{\{([A-Z]+)\}\}")
_INLINE_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


@functools.cache
def _template() -> str:
    """The page's template with the item states' CSS in its style (the CSP hashes the style as sent)."""
    text = resources.files("controller").joinpath("templates/report.html").read_text(encoding="utf-8")
    return text.replace("{{STATECSS}}", _state_css())


def _state_css() -> str:
    """Each state's colour (light and dark scheme) and the classes that show it, from controller.states."""
    light = " ".join(f"--{state}: {state.light};" for state in ItemState)
    dark = " ".join(f"--{state}: {state.dark};" for state in ItemState)
    rules = [
        f":root {{ {light} }}",
        f"@media (prefers-color-scheme: dark) {{ :root {{ {dark} }} }}",
        *(
            f".bl-{state} {{ border-left-color: var(--{state}) !important; }} "
            f".bg-{state} {{ background: var(--{state}); }} .st-{state}::before {{ background: var(--{state}); }}"
            for state in ItemState
        ),
    ]
    return "\n".join(rules)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


@functools.cache
def _content_security_policy() -> str:
    template = _template()
    style = _INLINE_STYLE.search(template)
    script = _INLINE_SCRIPT.search(template)
    if style is None or script is None:
        raise RuntimeError("report template lost its inline <style> or <script>")
    return (
        f"default-src 'none'; script-src {_sha256(script.group(1))}; style-src {_sha256(style.group(1))}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )


# The page data: the report without its items as canonical JSON, then one array per item. Columns are named
# once (the page looks them up by name), trailing empty columns are left off, times are whole microseconds
# from the batch's start, states are indexes into ``states``, and strings that items share (jobs,
# executions, console and log links) are indexes into ``strings``. An item's ``tasks`` is left off when it
# had exactly one task that says what the item says (the common case), ``[]`` when it had none.
PAGE_FORMAT = "fanout.page/1"
ITEM_COLUMNS = (
    *("index", "key", "job", "label", "state", "reason", "exit_code", "attempts", "launch", "execution"),
    *("task_index", "create_time", "start_time", "end_time", "console_url", "log_url", "log_tail"),
    *("log_tail_truncated", "log_tail_groups", "log_tail_errors", "vcpu_seconds", "gib_seconds", "cost_usd"),
    *("tasks", "result", "result_uri", "history"),
)
TASK_COLUMNS = ("index", "state", "exit_code", "attempts", "start_time", "end_time")
SHARED_STRINGS = ("job", "execution", "console_url", "log_url")
TIMES = ("create_time", "start_time", "end_time")
_STATE_CODE = {state: code for code, state in enumerate(ItemState)}
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _PageEncoder:
    """Turns items into page-data rows; one instance per page, holding the shared-string table."""

    def __init__(self, report: Report) -> None:
        self.base = report.started_at
        self.strings: dict[str, int] = {}
        for item in report.items:
            for name in SHARED_STRINGS:
                value = getattr(item, name)
                if value is not None and value not in self.strings:
                    self.strings[value] = len(self.strings)
        self.encode: dict[str, Callable[[Any], Any]] = {
            **dict.fromkeys(SHARED_STRINGS, self.strings.__getitem__),
            **dict.fromkeys(TIMES, self.time),
            "state": _STATE_CODE.__getitem__,
            "log_tail_truncated": int,
            "log_tail_groups": lambda groups: [[g.task_index, g.attempt, g.lines] for g in groups],
            "history": lambda attempts: [
                [a.attempt, a.launch, _STATE_CODE[a.state], a.exit_code, a.reason, a.retry] for a in attempts
            ],
        }

    def time(self, moment: datetime | None) -> int | None:
        return None if moment is None else (moment - self.base) // _MICROSECOND

    def tasks(self, item: ItemResult) -> list[list[Any]] | None:
        if len(item.tasks) == 1 and item.tasks[0] == _mirror_task(item):
            return None
        return [
            _trimmed(
                [
                    *(task.index, _STATE_CODE[task.state], task.exit_code, task.attempts),
                    *(self.time(task.start_time), self.time(task.end_time)),
                ]
            )
            for task in item.tasks
        ]

    def row(self, item: ItemResult) -> list[Any]:
        values = []
        for name in ITEM_COLUMNS:
            if name == "tasks":
                values.append(self.tasks(item))
                continue
            value = getattr(item, name)
            encode = self.encode.get(name)
            values.append(encode(value) if encode and value is not None else value)
        return _trimmed(values)


def _mirror_task(item: ItemResult) -> TaskResult:
    """The one task of a single-task item when the task says exactly what the item says."""
    return TaskResult(
        index=item.task_index or 0,
        state=item.state,
        exit_code=item.exit_code,
        attempts=item.attempts,
        start_time=item.start_time,
        end_time=item.end_time,
    )


def _trimmed(values: list[Any]) -> list[Any]:
    while values and values[-1] is None:
        values.pop()
    return values


def page_data_chunks(report: Report, items_per_chunk: int = 1000) -> Iterator[bytes]:
    """The page data as JSON, in pieces (a large report is never one string), safe inside ``<script>``."""
    encoder = _PageEncoder(report)
    head = {
        "format": PAGE_FORMAT,
        "report": report.model_dump(mode="json", by_alias=True, exclude={"items"}),
        "base_us": (report.started_at - _EPOCH) // _MICROSECOND,
        "states": [state.value for state in ItemState],
        "state_table": [
            {"name": state.value, "rank": state.rank, "label": state.label, "ran": state.ran} for state in ItemState
        ],
        "columns": ITEM_COLUMNS,
        "task_columns": TASK_COLUMNS,
        "shared_columns": SHARED_STRINGS,
        "time_columns": TIMES,
        "strings": list(encoder.strings),
    }
    pieces = [json.dumps(head, separators=(",", ":"))[:-1], ',"items":[']
    items = iter(report.items)  # once through, as they are read: a v2 report's items come shard by shard
    first = True
    while rows := [encoder.row(item) for item in itertools.islice(items, items_per_chunk)]:
        text = json.dumps(rows, separators=(",", ":"))[1:-1]
        pieces.append(("" if first else ",") + text)
        first = False
        yield _script_safe("".join(pieces))
        pieces = []
    pieces.append("]}")
    yield _script_safe("".join(pieces))


def _script_safe(text: str) -> bytes:
    # Inside <script> the HTML parser ends the element at "</script" and treats "<!--" specially, even in
    # JSON. These characters can only occur inside JSON strings, where a \u escape means the same, so
    # escaping every "<" (and ">" and "&" for good measure) leaves the parser nothing to find. (replace,
    # not translate: it is 40 times faster on a 10 MB report.)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _summary_html(report: Report, *, shown: int | None = None) -> str:
    summary = report.summary
    status = report.status.value
    facts = [
        ("Duration", format_seconds(batch_duration(report))),
        ("Started", _when(report.started_at)),
        ("Finished", _when(report.finished_at)),
        ("Launches", f"{summary.launches:,}"),
        *([("Cost", cost)] if (cost := cost_text(report)) else []),
        ("Project", report.project),
        ("Region", report.region),
        ("Mode", report.mode),
        ("Spec digest", report.spec_digest),
    ]
    if report.flow_run_id:
        facts.append(("Flow run", report.flow_run_id))
    facts.append(("Schema", report.schema_))
    counts = [("total", "all", summary.total, "total")]
    counts += [(state.value, state.value, summary.by_state.get(state, 0), state_label(state)) for state in ItemState]
    parts = [
        "<header>",
        f'<h1>Batch <span class="mono" id="batch-id">{escape(report.batch_id)}</span> '
        f'<span class="status status-{status}" id="batch-status">{status}</span></h1>',
        f'<p class="headline" id="headline">{escape(headline(report))}</p>',
        '<dl class="facts">',
        *(f"<div><dt>{name}</dt><dd>{escape(value)}</dd></div>" for name, value in facts),
        "</dl>",
        '<ul class="counts" aria-label="items by state; click to filter the table">',
        *(
            f'<li><button type="button" class="bl-{css}{"" if count else " zero"}" data-state="{state}">'
            f'<span class="n" data-count="{css}" data-value="{count}">{count:,}</span>{name}</button></li>'
            for css, state, count, name in counts
        ),
        "</ul>",
    ]
    if lines := rerun_lines(report):  # the batch this one reruns, the batches that rerun it
        parts += ['<ul class="lineage" id="lineage">', *(f"<li>{escape(printable(ln))}</li>" for ln in lines), "</ul>"]
    if report.problems:
        parts += [
            '<ul class="problems" id="problems">',
            *(f"<li>{escape(printable(problem))}</li>" for problem in report.problems),
            "</ul>",
        ]
    if shown is not None:
        parts.append(
            f'<p class="muted" id="partial">This page holds {shown:,} of the batch\'s {summary.total:,} items: every '
            "item that did not succeed first (worst first), then the first that succeeded; the timeline and the "
            "table show those. Every item is in report.json's shards beside this page (items/*.jsonl), and "
            "<code>fanout report show</code> reads them.</p>"
        )
    parts.append("</header>")
    return "\n".join(parts)


def shown_items(report: Report, limit: int | None = None) -> list[ItemResult] | None:
    """The items a page of a report of more than ``limit`` items holds, in spec order: those that did not
    succeed, worst first, then the first that succeeded, ``limit`` in all, each found as the items stream by.
    None when the report is no larger: the page holds every item. ``limit`` defaults to ``PAGE_ITEMS``."""
    limit = PAGE_ITEMS if limit is None else limit
    if len(report.items) <= limit:
        return None
    failed: list[ItemResult] = []
    succeeded: list[ItemResult] = []
    for item in report.items:  # once through: a v2 report's items are read a shard at a time
        if item.state.ok:
            if len(succeeded) < limit:
                succeeded.append(item)
        else:
            failed.append(item)
            if len(failed) >= 2 * limit:  # pruned now and then, so at most twice the page is ever held
                failed = worst_first(failed, limit)
    shown = worst_first(failed, limit)
    shown += succeeded[: limit - len(shown)]
    return sorted(shown, key=lambda item: item.index)


def render_html_chunks(report: Report) -> Iterator[bytes]:
    """The whole report as one HTML document, in pieces: inline CSS and JS, data embedded once, no external
    fetches. The embedded JSON is streamed, so a large report is never held twice. A report of more than
    ``PAGE_ITEMS`` items embeds that many (``shown_items``), and its page says so: the page loads what it
    shows, and the summary above it counts every item."""
    shown = shown_items(report)
    values = {
        "CSP": _content_security_policy(),
        "SCHEMA": escape(report.schema_),
        "TITLE": escape(f"{report.batch_id}: {report.status.value} · fanout report"),
        "SUMMARY": _summary_html(report, shown=None if shown is None else len(shown)),
    }
    before, after = _template().split("{{DATA}}")
    # One pass over each part of the template: text inserted for one placeholder is never scanned for another.
    yield _PLACEHOLDER.sub(lambda match: values[match.group(1)], before).encode()
    yield from page_data_chunks(report if shown is None else report.model_copy(update={"items": shown}))
    yield _PLACEHOLDER.sub(lambda match: values[match.group(1)], after).encode()


def render_html(report: Report) -> str:
    """``render_html_chunks`` as one string."""
    return b"".join(render_html_chunks(report)).decode()
