"""Log tails from Cloud Logging: the last lines each item printed, in as few ``entries:list`` calls as the
filter language allows.

One filter names many executions at once (``labels."run.googleapis.com/execution_name"=("a" OR "b")``),
entries come newest first, and each target keeps its first ``max_lines`` (its tail) until every target is
full or the call budget is spent. Fetching is bounded in calls and time, so a slow Logging API shortens
the tails instead of holding up the report.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.cloud.logging import DESCENDING

from controller.quota import Limiter
from controller.redact import payload_text
from controller.report import TailGroup
from controller.retry import is_retryable

log = logging.getLogger(__name__)

EXECUTION_LABEL = "run.googleapis.com/execution_name"
TASK_INDEX_LABEL = "run.googleapis.com/task_index"
TASK_ATTEMPT_LABEL = "run.googleapis.com/task_attempt"
# Logging filters are limited to 20,000 characters; leave room for the fixed clauses.
MAX_FILTER_CHARS = 18_000
PAGE_SIZE = 1000
PAGE_RETRIES = 3  # per query: a reset connection or a 503 costs a retry, not the tails


@dataclass(frozen=True, slots=True)
class TailTarget:
    """Whose tail to fetch: an execution, and for packed executions one task of it."""

    key: str  # the item key the tail belongs to
    execution: str  # short execution name
    task_index: int | None = None


# Severities from ERROR up (LogSeverity: ERROR 500, CRITICAL 600, ALERT 700, EMERGENCY 800).
ERROR_SEVERITIES = frozenset({"ERROR", "CRITICAL", "ALERT", "EMERGENCY"})


@dataclass(frozen=True, slots=True)
class TailLine:
    text: str
    task_index: int | None  # the run.googleapis.com/task_index label
    attempt: int | None  # the run.googleapis.com/task_attempt label (0 for the first)
    error: bool  # severity ERROR or worse


@dataclass
class Tail:
    lines: list[TailLine] = field(default_factory=list)  # newest first while collecting
    bytes: int = 0
    truncated: bool = False

    def grouped(self) -> list[TailLine]:
        """The lines oldest first, grouped by task index and then attempt (each group in the order printed)."""
        lines = list(reversed(self.lines))
        return sorted(lines, key=lambda line: (line.task_index or 0, line.attempt or 0))

    def fields(self) -> dict[str, Any]:
        """The tail as ``ItemResult`` fields: the lines, their task and attempt groups when there is more than
        one group, and the positions of ERROR lines."""
        lines = self.grouped()
        groups: list[TailGroup] = []
        for line in lines:
            task, attempt = line.task_index or 0, line.attempt or 0
            if groups and (groups[-1].task_index, groups[-1].attempt) == (task, attempt):
                groups[-1] = TailGroup(task_index=task, attempt=attempt, lines=groups[-1].lines + 1)
            else:
                groups.append(TailGroup(task_index=task, attempt=attempt, lines=1))
        errors = [n for n, line in enumerate(lines) if line.error]
        return {
            "log_tail": [line.text for line in lines],
            "log_tail_truncated": self.truncated,
            "log_tail_groups": groups if len(groups) > 1 else None,
            "log_tail_errors": errors or None,
        }


@dataclass
class TailStats:
    calls: int = 0
    entries: int = 0
    incomplete: bool = False  # the call or time budget ran out before every tail was full
    unreadable: int = 0  # entries skipped: their labels or payload were not what Cloud Logging writes


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _batches(values: Sequence[str], label: str, fixed: int) -> list[list[str]]:
    """Split values so each ``label=("a" OR "b" ...)`` clause stays under the filter length limit."""
    out: list[list[str]] = [[]]
    size = fixed + len(label) + 4
    for value in values:
        cost = len(value) + 6
        if out[-1] and size + cost > MAX_FILTER_CHARS:
            out.append([])
            size = fixed + len(label) + 4
        out[-1].append(value)
        size += cost
    return [batch for batch in out if batch]


def build_filters(project: str, targets: Iterable[TailTarget], since: datetime | None) -> list[str]:
    """Filters covering every target: per-item executions grouped by execution name, packed tasks grouped
    by execution and task index."""
    # Only what the containers printed: Cloud Run's own lines ("Container called exit(1).") go to
    # run.googleapis.com/varlog/system and are not part of an item's output.
    streams = " OR ".join(f'"projects/{project}/logs/run.googleapis.com%2F{s}"' for s in ("stdout", "stderr"))
    base = ['resource.type="cloud_run_job"', f'resource.labels.project_id="{project}"', f"logName=({streams})"]
    if since is not None:
        base.append(f'timestamp>="{since.isoformat().replace("+00:00", "Z")}"')
    fixed = " AND ".join(base)
    whole: list[str] = []
    by_task: dict[str, list[str]] = defaultdict(list)
    for target in targets:
        if target.task_index is None:
            whole.append(target.execution)
        else:
            by_task[target.execution].append(str(target.task_index))
    filters = []
    for batch in _batches(sorted(set(whole)), EXECUTION_LABEL, len(fixed)):
        values = " OR ".join(_quote(v) for v in batch)
        filters.append(f'{fixed} AND labels."{EXECUTION_LABEL}"=({values})')
    for execution, indexes in sorted(by_task.items()):
        head = f'{fixed} AND labels."{EXECUTION_LABEL}"={_quote(execution)}'
        for batch in _batches(sorted(set(indexes), key=int), TASK_INDEX_LABEL, len(head)):
            values = " OR ".join(_quote(v) for v in batch)
            filters.append(f'{head} AND labels."{TASK_INDEX_LABEL}"=({values})')
    return filters


def fetch_tails(
    client: Any,
    project: str,
    targets: Sequence[TailTarget],
    *,
    limiter: Limiter,
    max_lines: int = 50,
    max_bytes: int = 8192,
    since: datetime | None = None,
    max_calls: int = 20,
    max_seconds: float = 60.0,
    redact: Callable[[str], str] = lambda line: line,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    resource_name: str | None = None,
) -> tuple[dict[str, Tail], TailStats]:
    """The last lines of each target, keyed by ``TailTarget.key``.

    ``resource_name`` is what to search: the project (default) or a log view the caller may read, as the
    Terraform module grants (``projects/P/locations/L/buckets/B/views/V``).
    """
    collector = _Collector(targets, max_lines=max_lines, max_bytes=max_bytes, redact=redact)
    stats = TailStats()
    budget = _Budget(limiter, stats, max_calls=max_calls, deadline=clock() + max_seconds, clock=clock, sleep=sleep)
    for filter_ in build_filters(project, targets, since):

        def query(page_token: str | None, filter_: str = filter_) -> Any:
            return client.list_entries(
                resource_names=[resource_name or f"projects/{project}"],
                filter_=filter_,
                order_by=DESCENDING,
                page_size=PAGE_SIZE,
                page_token=page_token,
            )

        for entry in budget.pages(query, until=collector.done):
            try:
                collector.add(entry)
            except (AttributeError, TypeError, ValueError):  # one odd entry costs its line, not every tail
                stats.unreadable += 1
        if stats.incomplete:
            break
    return collector.tails, stats


class _Collector:
    """Lines of log entries, newest first, into the tails of the targets they belong to, until each is full."""

    def __init__(
        self, targets: Sequence[TailTarget], *, max_lines: int, max_bytes: int, redact: Callable[[str], str]
    ) -> None:
        self.tails: dict[str, Tail] = {target.key: Tail() for target in targets}
        self.owners: dict[tuple[str, int | None], list[str]] = defaultdict(list)
        for target in targets:
            self.owners[(target.execution, target.task_index)].append(target.key)
        self.open = {target.key for target in targets}
        self.max_lines, self.max_bytes, self.redact = max_lines, max_bytes, redact

    def done(self) -> bool:
        return not self.open

    def add(self, entry: Any) -> None:
        labels = entry.labels or {}
        execution = labels.get(EXECUTION_LABEL, "")
        index_text = labels.get(TASK_INDEX_LABEL)
        candidates = self.owners.get((execution, None), []) + (
            # A label that is not an index (Cloud Run writes digits) matches no task rather than ending the tails.
            self.owners.get((execution, int(index_text)), []) if index_text is not None and index_text.isdigit() else []
        )
        line: TailLine | None = None
        for key in candidates:
            if key not in self.open:
                continue
            tail = self.tails[key]
            line = line or _tail_line(entry, self.redact(payload_text(entry.payload)))
            if len(tail.lines) >= self.max_lines or tail.bytes + len(line.text) > self.max_bytes:
                tail.truncated = True
                self.open.discard(key)
                continue
            tail.lines.append(line)
            tail.bytes += len(line.text)


def _tail_line(entry: Any, text: str) -> TailLine:
    labels = entry.labels or {}
    index, attempt = labels.get(TASK_INDEX_LABEL), labels.get(TASK_ATTEMPT_LABEL)
    return TailLine(
        text=text,
        task_index=int(index) if index is not None and index.isdigit() else None,
        attempt=int(attempt) if attempt is not None and attempt.isdigit() else None,
        error=_is_error(getattr(entry, "severity", None)),
    )


def _is_error(severity: Any) -> bool:
    """Severity as the client gives it: a name ("ERROR"), a number (500) or None."""
    if isinstance(severity, int):
        return severity >= 500
    return isinstance(severity, str) and severity.upper() in ERROR_SEVERITIES


class _Budget:
    """The calls and the time log tails may take; each page of entries is one call, charged to the quota
    before it happens."""

    def __init__(
        self,
        limiter: Limiter,
        stats: TailStats,
        *,
        max_calls: int,
        deadline: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.limiter, self.stats, self.max_calls, self.deadline = limiter, stats, max_calls, deadline
        self.clock, self.sleep = clock, sleep

    def pages(self, query: Callable[[str | None], Iterator[Any]], *, until: Callable[[], bool]) -> Iterator[Any]:
        """The entries of one query while the budget lasts and ``until()`` is false. A page that fails with a
        transient error (a connection reset, a 503) is asked for again, from its page token, up to
        ``PAGE_RETRIES`` times; any other failure ends the query (and the tails) as incomplete."""
        entries = query(None)
        consumed = retries = 0
        asking = True  # the next entry comes with a call: the first, and the first after a retry
        stats = self.stats
        while not until():
            # The client fetches a page when the previous one is used up: that moment is one API call.
            if (asking or consumed % PAGE_SIZE == 0) and not self._charge():
                return
            asking = False
            try:
                entry = next(entries, None)
            except Exception as exc:
                if not (is_retryable(exc) or _is_api_error(exc)):
                    raise
                # The iterator is spent once a page failed; its token still names the page that failed.
                token = getattr(entries, "next_page_token", None)
                if is_retryable(exc) and retries < PAGE_RETRIES and (token or not consumed):
                    retries += 1
                    log.info("retrying a page of log entries after %s: %s", type(exc).__name__, exc)
                    self.sleep(min(0.5 * retries, max(0.0, self.deadline - self.clock())))
                    entries, asking = query(token), True
                    continue
                log.warning("log tails incomplete: Cloud Logging failed: %s", exc)
                stats.incomplete = True
                return
            if entry is None:
                return
            consumed += 1
            stats.entries += 1
            yield entry

    def _charge(self) -> bool:
        """One more call, if the budget has it; else the tails are incomplete."""
        if self.stats.calls >= self.max_calls or self.clock() >= self.deadline:
            self.stats.incomplete = True
            return False
        self.limiter.acquire()
        self.stats.calls += 1
        return True


def _is_api_error(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.GoogleAPICallError)
