"""Log entries that tasks write, stored as Cloud Run writes them to Cloud Logging, and ``entries:list``.

Entries are kept in arrival order (which is timestamp order: timestamps are taken on arrival and never go
backwards, unless a structured line gives its own time: such entries are still listed in arrival order),
globally and per execution; a filter that names executions reads only their entries. The store
keeps at most ``max_entries``; the oldest go first.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from cloudrun_emulator.errors import invalid
from cloudrun_emulator.logfilter import SEVERITY_LEVELS, CompiledFilter, Record, check_budget
from cloudrun_emulator.structured import take_special_fields
from cloudrun_emulator.timefmt import rfc3339_micros

MAX_PAGE_SIZE = 1000  # entries.list: "If the value is negative or exceeds 1000, the request is rejected."
DEFAULT_PAGE_SIZE = 50  # entries.list: "Default is 50."
DEFAULT_MAX_ENTRIES = 200_000
_BUDGET_CHECK_EVERY = 512
# Seconds one entries.list request may spend filtering. Cloud Logging matches regular expressions with RE2
# (linear time); the emulator uses a backtracking engine, so it bounds the work instead.
DEFAULT_QUERY_BUDGET = 10.0


class LogStore:
    """Bounded in-memory Cloud Logging for ``cloud_run_job`` entries."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, query_budget_seconds: float = DEFAULT_QUERY_BUDGET
    ) -> None:
        self.max_entries = max_entries
        self.query_budget_seconds = query_budget_seconds
        self._all: deque[Record] = deque()
        self._by_execution: dict[str, deque[Record]] = {}
        self._seq = itertools.count(1)
        self._last_ts = 0

    def __len__(self) -> int:
        return len(self._all)

    def write(
        self,
        *,
        project: str,
        region: str,
        job: str,
        execution: str,
        task_index: int,
        attempt: int,
        instance_id: str,
        stream: str,
        line: str,
        severity: str | None = None,
    ) -> None:
        """Store one line a task printed (``stream`` is stdout, stderr or varlog/system)."""
        now = max(time.time_ns() // 1000, self._last_ts)
        self._last_ts = now
        seq = next(self._seq)
        entry: dict[str, Any] = {
            "insertId": f"{seq:012x}",
            "logName": f"projects/{project}/logs/" + quote(f"run.googleapis.com/{stream}", safe=""),
            "resource": {
                "type": "cloud_run_job",
                "labels": {"job_name": job, "location": region, "project_id": project},
            },
            "timestamp": rfc3339_micros(now),
            "receiveTimestamp": rfc3339_micros(now),
            "labels": {
                "instanceId": instance_id,
                "run.googleapis.com/execution_name": execution,
                "run.googleapis.com/task_attempt": str(attempt),
                "run.googleapis.com/task_index": str(task_index),
            },
        }
        payload = _structured(line)
        stamp = now
        if payload is None:
            entry["textPayload"] = line
        else:
            # Cloud Run turns a JSON object line into jsonPayload, takes its "severity" field, and moves
            # Cloud Logging's other special fields onto the entry (cloudrun_emulator.structured).
            level = str(payload.pop("severity", "")).upper()
            severity = level if level in SEVERITY_LEVELS else severity
            fields, given = take_special_fields(payload)
            # The run's own labels win over a line's labels of the same name.
            entry["labels"] = {**fields.pop("labels", {}), **entry["labels"]}
            entry.update(fields)
            if given is not None:
                stamp = given
                entry["timestamp"] = rfc3339_micros(given)
            entry["jsonPayload"] = payload
        if severity and severity != "DEFAULT":
            entry["severity"] = severity
        record = Record(seq, stamp, now, execution, entry)
        self._all.append(record)
        self._by_execution.setdefault(execution, deque()).append(record)
        while len(self._all) > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        oldest = self._all.popleft()
        per_execution = self._by_execution[oldest.execution]
        per_execution.popleft()
        if not per_execution:
            del self._by_execution[oldest.execution]

    def list(
        self,
        flt: CompiledFilter,
        *,
        projects: set[str] | None,
        descending: bool,
        page_size: int,
        page_token: str,
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of matching entries and the token for the next page ("" when this is the last)."""
        candidates = self.candidates(flt, descending=descending, page_token=page_token)
        return select(candidates, flt, projects=projects, page_size=page_size)

    def candidates(self, flt: CompiledFilter, *, descending: bool, page_token: str) -> Iterator[Record]:
        """The entries a query has to look at, in its order, from a snapshot taken now.

        Call it where the store is written (the event loop); the iterator may then be consumed on any thread,
        since stored records never change.
        """
        after = _decode_token(page_token)
        if flt.execution_names is None:
            start = 0
            if after is not None and self._all and not descending:
                start = max(0, after - self._all[0].seq + 1)
            records = list(itertools.islice(self._all, start, None))
            iterator: Iterator[Record] = reversed(records) if descending else iter(records)
        else:
            sources = [list(self._by_execution[n]) for n in flt.execution_names if n in self._by_execution]
            if descending:
                iterator = heapq.merge(*(reversed(s) for s in sources), key=lambda r: -r.seq)
            else:
                iterator = heapq.merge(*sources, key=lambda r: r.seq)
        if after is None:
            return iterator
        if descending:
            return itertools.dropwhile(lambda r: r.seq >= after, iterator)
        return itertools.dropwhile(lambda r: r.seq <= after, iterator)


def select(
    candidates: Iterable[Record], flt: CompiledFilter, *, projects: set[str] | None, page_size: int
) -> tuple[list[dict[str, Any]], str]:
    """One page of the candidates that match, and the next page's token; checks the time budget as it goes."""
    prefixes = tuple(f"projects/{p}/" for p in projects) if projects is not None else None
    page: list[dict[str, Any]] = []
    last_seq = None
    for looked, record in enumerate(candidates):
        if looked % _BUDGET_CHECK_EVERY == 0:
            check_budget()
        if prefixes is not None and not record.entry["logName"].startswith(prefixes):
            continue
        if not flt.predicate(record):
            continue
        if len(page) == page_size:
            return page, _encode_token(last_seq)
        page.append(record.entry)
        last_seq = record.seq
    return page, ""


def _structured(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _encode_token(seq: int | None) -> str:
    return base64.urlsafe_b64encode(f"log:{seq}".encode()).decode()


def _decode_token(token: str) -> int | None:
    if not token:
        return None
    try:
        kind, _, seq = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind != "log":
            raise ValueError(kind)
        return int(seq)
    except ValueError:
        raise invalid("page_token", "invalid page token", "Invalid page token.") from None


def page_size_of(raw: Any) -> int:
    """The page size an entries.list request asks for, checked against the documented limits."""
    if raw in (None, "", 0):
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except (TypeError, ValueError):
        raise invalid("page_size", f"page_size must be an integer, got {raw!r}") from None
    if size < 0 or size > MAX_PAGE_SIZE:
        raise invalid("page_size", f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {size}")
    return size
