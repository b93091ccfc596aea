"""Running a planned batch: launch, watch, cancel, collect, and turn what happened into item results.

Plain Python with injected clock and waits, so tests drive it exactly and the Prefect flow (``flow.py``)
stays a thin layer that maps these steps onto task runs. Thread-safe where the flow needs it: launches
run on a pool of threads while the watcher polls.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypedDict

from google.api_core import exceptions as gexc

from controller.cloudrun import CloudRun, ExecutionStatus, TaskStatus, short_name
from controller.logs import Tail, TailTarget, fetch_tails
from controller.plan import Launch, Plan, manifest_chunks
from controller.report import (
    BatchStatus,
    ItemResult,
    ItemState,
    LaunchResult,
    Report,
    TaskResult,
    batch_status,
    summarize,
)
from controller.retry import api_error_message, is_retryable
from controller.spec import Item
from controller.store import Store

log = logging.getLogger(__name__)

BATCH_STATE = "batch.json"
BATCH_SCHEMA = "fanout.batch/v1"


class BatchConflict(Exception):
    """The batch id is taken by a batch with a different spec."""


@dataclass(frozen=True)
class PollPolicy:
    """Adaptive polling: ``fastest`` when an execution has just started or ended, slowing by ``backoff``
    up to ``slowest`` otherwise; while tasks finish at a measurable pace, at most ``remaining time /
    polls_per_remaining`` (never under ``fastest``), so the end of a long packed execution is seen soon
    after it happens and the execution costs a few dozen polls rather than one per ``fastest`` seconds."""

    fastest: float = 2.0
    slowest: float = 30.0
    # The first polls of a batch come sooner, growing by ``backoff`` to ``fastest``: a task of a fraction of
    # a second is seen done within a fraction of a second, for a handful of extra calls per batch.
    first: float = 0.25
    backoff: float = 1.5
    polls_per_remaining: float = 4.0


@dataclass
class LaunchState:
    launch: Launch
    execution: ExecutionStatus | None = None
    error: str | None = None  # why it never started
    tasks: list[TaskStatus] | None = None
    adopted: bool = False  # found already running (resume, or a dropped response to RunJob)

    @property
    def active(self) -> bool:
        return self.execution is not None and not self.execution.done


@dataclass
class Redactor:
    """Replaces sensitive literal values in any text that leaves the controller."""

    secrets: frozenset[str] = frozenset()

    def __call__(self, text: str) -> str:
        for value in self.secrets:
            if value and value in text:
                text = text.replace(value, "***")
        return text


@dataclass
class BatchRunner:
    plan: Plan
    cloud: CloudRun
    store: Store
    manifest_store: Store | None = None  # default: the report store
    concurrency: int = 16
    poll: PollPolicy = field(default_factory=PollPolicy)
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[Mapping[str, int]], None] | None = None
    deadline_seconds: float | None = None

    def __post_init__(self) -> None:
        self.states = [LaunchState(launch) for launch in self.plan.launches]
        self.started_at = self.now()
        self.redact = Redactor(self.plan.batch.sensitive_values())
        self.problems: list[str] = []
        self.cancelled = False
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, self.concurrency))
        self._start_clock = self.clock()

    # -- before launching ----------------------------------------------------------------------------

    def open_batch(self, *, project: str, region: str) -> bool:
        """Record the batch next to its report, or find it there; returns True when resuming.

        Raises BatchConflict when the id belongs to a batch with a different spec.
        """
        batch = self.plan.batch
        existing = self.store.read(batch.batch_id, BATCH_STATE)
        if existing is not None:
            state = json.loads(existing)
            if state.get("spec_digest") != batch.digest:
                raise BatchConflict(
                    f"batch id {batch.batch_id!r} was already used for a different spec "
                    f"(at {self.store.url(batch.batch_id)}); choose another --batch-id, or run the same spec "
                    "to resume it"
                )
            self.started_at = datetime.fromisoformat(state["started_at"])
            return True
        state = {
            "schema": BATCH_SCHEMA,
            "batch_id": batch.batch_id,
            "spec_digest": batch.digest,
            "started_at": self.started_at.isoformat(),
            "project": project,
            "region": region,
            "mode": str(self.plan.mode),
            "launches": len(self.plan.launches),
            "items": len(batch.items),
        }
        self.store.write(batch.batch_id, BATCH_STATE, json.dumps(state, indent=1).encode())
        return False

    def prepare(self, *, service_account: str | None = None) -> None:
        """Create one-off jobs and write the manifests of packed launches."""
        for job in self.plan.one_off_jobs:
            self.cloud.ensure_job(job, service_account=service_account)
        batch_id = self.plan.batch.batch_id
        files: list[tuple[str, bytes]] = []
        for launch in self.plan.launches:
            if launch.packed:
                files.extend((f"manifests/{launch.index:05d}/{name}", data) for name, data in manifest_chunks(launch))
        if files:
            (self.manifest_store or self.store).write_many(batch_id, files)

    def adopt_existing(self) -> int:
        """Attach to executions this batch already started (a resumed run); returns how many."""
        keys_by_job: dict[str, set[str]] = {}
        for state in self.states:
            keys_by_job.setdefault(state.launch.job, set()).add(state.launch.key)
        by_key: dict[str, ExecutionStatus] = {}
        for job, keys in keys_by_job.items():
            by_key.update(self.cloud.find_launched(job, keys, since=self.started_at))
        for state in self.states:
            if (found := by_key.get(state.launch.key)) is not None:
                state.execution, state.adopted = found, True
        return len(by_key)

    # -- launching -----------------------------------------------------------------------------------

    def pending(self) -> list[LaunchState]:
        return [s for s in self.states if s.execution is None and s.error is None]

    def launch(self, state: LaunchState) -> LaunchState:
        """Start one launch's execution (exactly once); records a refusal as the reason it never ran."""
        try:
            with self._slots:
                # Checked while holding a slot: cancel() takes every slot first, so a launch either ends
                # before cancel() looks for executions to stop, or sees the cancellation and never starts.
                if self.cancel_event.is_set():
                    state.error = "the batch was cancelled before this launch started"
                    return state
                execution = self.cloud.run(state.launch, since=self.started_at)
        except gexc.GoogleAPICallError as exc:
            state.error = self.redact(f"Cloud Run refused the run: {api_error_message(exc)}")
            log.warning("launch %s (%s) failed: %s", state.launch.key, state.launch.job, state.error)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            state.error = self.redact(f"Cloud Run could not be reached: {type(exc).__name__}: {exc}")
            log.warning("launch %s (%s) failed: %s", state.launch.key, state.launch.job, state.error)
        else:
            with self._lock:
                state.execution = execution
        return state

    def launch_all(self) -> None:
        """Start every pending launch on ``concurrency`` threads (the flow uses Prefect tasks instead)."""
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="launch") as pool:
            list(pool.map(self.launch, self.pending()))

    # -- watching ------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Items by state for progress: pending, running and the terminal states known so far."""
        counts: Counter[str] = Counter()
        for state in self.states:
            items = len(state.launch.items)
            execution = state.execution
            if state.error is not None:
                counts[ItemState.NOT_LAUNCHED] += items
            elif execution is None:
                counts["pending"] += items
            elif state.launch.packed:
                counts[ItemState.SUCCEEDED] += execution.succeeded
                counts[ItemState.FAILED] += execution.failed
                counts[ItemState.CANCELLED] += execution.cancelled
                counts["running"] += execution.running
                counts["pending"] += max(0, items - execution.finished_tasks - execution.running)
            elif execution.done:
                outcome = {"succeeded": ItemState.SUCCEEDED, "cancelled": ItemState.CANCELLED}
                counts[outcome.get(execution.outcome or "", ItemState.FAILED)] += 1
            else:
                counts["running" if execution.start_time else "pending"] += 1
        return dict(counts)

    def _deadline_passed(self) -> bool:
        return self.deadline_seconds is not None and self.clock() - self._start_clock > self.deadline_seconds

    def watch(self, launching_done: Callable[[], bool] = lambda: True) -> None:
        """Poll until every started execution has ended and launching is over, or until cancelled or past
        the batch deadline (then cancel)."""
        warm = interval = min(self.poll.first, self.poll.fastest)
        last: dict[str, tuple[bool, bool]] = {}
        first_seen: dict[str, tuple[float, int]] = {}  # execution -> (clock, finished tasks) when first polled
        while True:
            with self._lock:
                active = [s for s in self.states if s.active]
            if not active and launching_done():
                break
            if self._deadline_passed():
                self.problems.append(f"the batch passed its deadline of {self.deadline_seconds:.0f}s")
                self.cancel_event.set()
            if self.cancel_event.is_set():
                break
            changed = False
            ends_in: float | None = None
            if active:
                names_by_job: dict[str, set[str]] = {}
                for state in active:
                    assert state.execution is not None
                    names_by_job.setdefault(state.launch.job, set()).add(state.execution.name)
                statuses = self.cloud.poll(names_by_job, since=self.started_at)
                now = self.clock()
                with self._lock:
                    for state in active:
                        assert state.execution is not None
                        status = statuses.get(state.execution.name)
                        if status is None:
                            continue
                        # Only a start or an end resets to the fastest pace: the task counts of a packed
                        # execution change at every poll, and resetting on them polled a 10,000-task
                        # execution every `fastest` seconds from start to end.
                        signature = (status.start_time is not None, status.done)
                        changed |= last.get(status.name) != signature
                        last[status.name] = signature
                        state.execution = status
                        remaining = _remaining_seconds(
                            status, first_seen.setdefault(status.name, (now, status.finished_tasks)), now
                        )
                        if remaining is not None:
                            ends_in = remaining if ends_in is None else min(ends_in, remaining)
            if self.progress:
                self.progress(self.counts())
            interval = warm if changed else min(interval * self.poll.backoff, self.poll.slowest)
            if ends_in is not None:
                interval = min(interval, max(self.poll.fastest, ends_in / self.poll.polls_per_remaining))
            if not active:
                interval = warm  # only waiting for launches to register
            warm = min(warm * self.poll.backoff, self.poll.fastest)
            self.cancel_event.wait(interval)
        if self.cancel_event.is_set():
            self.cancel()

    def cancel(self, *, wait_seconds: float = 60.0) -> None:
        """Cancel every execution of the batch still running, then wait (bounded) until they have stopped."""
        self.cancelled = True
        self.cancel_event.set()
        # Let RunJob calls already in flight finish, so the executions they start are cancelled too.
        deadline = self.clock() + wait_seconds
        taken = 0
        for _ in range(max(1, self.concurrency)):
            if not self._slots.acquire(timeout=max(0.0, deadline - self.clock())):
                break
            taken += 1
        for _ in range(taken):
            self._slots.release()
        with self._lock:
            active = [s for s in self.states if s.active]
        for state in active:
            assert state.execution is not None
            try:
                self.cloud.cancel(state.execution.name)
            except gexc.GoogleAPICallError as exc:
                name = short_name(state.execution.name)
                self.problems.append(self.redact(f"could not cancel {name}: {api_error_message(exc)}"))
        deadline = self.clock() + wait_seconds
        while active and self.clock() < deadline:
            names_by_job: dict[str, set[str]] = {}
            for state in active:
                assert state.execution is not None
                names_by_job.setdefault(state.launch.job, set()).add(state.execution.name)
            statuses = self.cloud.poll(names_by_job, since=self.started_at)
            for state in active:
                assert state.execution is not None
                state.execution = statuses.get(state.execution.name, state.execution)
            active = [s for s in active if s.active]
            if active:
                time.sleep(min(self.poll.fastest, 1.0))
        if active:
            self.problems.append(
                f"{len(active)} execution(s) had not stopped {wait_seconds:.0f}s after cancellation: "
                + ", ".join(short_name(s.execution.name) for s in active if s.execution)
            )

    # -- collecting ----------------------------------------------------------------------------------

    def collect_tasks(self) -> None:
        """Fetch task details where the execution alone cannot tell each item's outcome."""
        for state in self.states:
            execution = state.execution
            if execution is None:
                continue
            simple = not state.launch.packed and execution.task_count == 1 and execution.outcome == "succeeded"
            if simple:
                state.tasks = [
                    TaskStatus(
                        index=0,
                        state=ItemState.SUCCEEDED,
                        exit_code=0,
                        attempts=execution.retried + 1,
                        start_time=execution.start_time,
                        completion_time=execution.completion_time,
                        message=None,
                    )
                ]
            else:
                state.tasks = self.cloud.list_tasks(execution.name)

    def tail_targets(self, results: Iterable[ItemResult], *, all_items: bool = False) -> list[TailTarget]:
        return [
            TailTarget(key=r.key, execution=short_name(r.execution), task_index=r.task_index)
            for r in results
            if r.execution and (all_items or not r.state.ok) and r.state is not ItemState.NOT_LAUNCHED
        ]

    def attach_tails(
        self,
        results: list[ItemResult],
        logging_client: object,
        *,
        all_items: bool = False,
        max_lines: int = 50,
        max_bytes: int = 8192,
        max_calls: int = 20,
        max_seconds: float = 60.0,
        log_resource: str | None = None,
    ) -> list[ItemResult]:
        """Results with the log tails of failed items (or all) filled in. A Logging failure leaves them
        without tails and notes it; it never fails the report."""
        targets = self.tail_targets(results, all_items=all_items)
        if not targets:
            return results
        try:
            tails, stats = fetch_tails(
                logging_client,
                self.cloud.project,
                targets,
                limiter=self.cloud.budget.logs,
                max_lines=max_lines,
                max_bytes=max_bytes,
                since=self.started_at,
                max_calls=max_calls,
                max_seconds=max_seconds,
                redact=self.redact,
                resource_name=log_resource,
            )
        except gexc.GoogleAPICallError as exc:
            self.problems.append(self.redact(f"log tails unavailable: Cloud Logging said {api_error_message(exc)}"))
            return results
        if stats.incomplete:
            self.problems.append("some log tails are incomplete: the Cloud Logging call or time budget ran out")
        with_tails: dict[str, Tail] = tails
        return [
            replace(r, log_tail=with_tails[r.key].chronological(), log_tail_truncated=with_tails[r.key].truncated)
            if r.key in with_tails
            else r
            for r in results
        ]

    def item_results(self) -> list[ItemResult]:
        """One result per item of the batch, every one in a terminal state, in spec order."""
        results: list[ItemResult] = []
        for state in self.states:
            # A packed item's tasks are those at its position: grouped once per launch, since a scan per item
            # made a 10,000-item execution cost 10,000 x 10,000 comparisons (0.37 ms per item).
            by_index: dict[int, list[TaskStatus]] = {}
            if state.launch.packed:
                for task in state.tasks or []:
                    by_index.setdefault(task.index, []).append(task)
            # One string for all the items of an execution rather than one each (160 bytes an item).
            console = self.console_url(state.execution.name) if state.execution else None
            for position, item in enumerate(state.launch.items):
                tasks = by_index.get(position, []) if state.launch.packed else state.tasks or []
                results.append(self._item_result(state, item, position, tasks, console))
        results.sort(key=lambda r: r.index)
        return results

    def _item_result(
        self, state: LaunchState, item: Item, position: int, tasks: list[TaskStatus], console: str | None
    ) -> ItemResult:
        launch = state.launch
        base = _Identity(key=item.key, index=item.index, job=launch.job, label=item.label, launch=launch.index)
        execution = state.execution
        if execution is None:
            why = state.error or (
                "the batch was cancelled before this item launched" if self.cancelled else "never launched"
            )
            return ItemResult(**base, state=ItemState.NOT_LAUNCHED, reason=why)
        task_results = [
            TaskResult(
                index=t.index,
                state=t.state or self._unfinished_state(),
                exit_code=t.exit_code,
                attempts=t.attempts,
                start_time=t.start_time,
                end_time=t.completion_time,
            )
            for t in tasks
        ]
        reason: str | None
        if not task_results:
            item_state = self._unfinished_state() if not execution.done else ItemState.FAILED
            reason = execution.message or "Cloud Run reported no tasks for this execution"
        else:
            bad = [t for t in task_results if t.state is not ItemState.SUCCEEDED]
            worst = min(bad, key=lambda t: _SEVERITY[t.state]) if bad else None
            item_state = worst.state if worst else ItemState.SUCCEEDED
            reason = self._reason(worst, tasks, launch) if worst else None
        exit_codes = [t.exit_code for t in task_results if t.exit_code is not None]
        starts = [t.start_time for t in task_results if t.start_time]
        ends = [t.end_time for t in task_results if t.end_time]
        return ItemResult(
            **base,
            state=item_state,
            reason=self.redact(reason) if reason else None,
            exit_code=next((c for c in exit_codes if c != 0), exit_codes[0] if exit_codes else None),
            attempts=max((t.attempts for t in task_results), default=0),
            execution=execution.name,
            task_index=position if launch.packed else None,
            tasks=task_results,
            create_time=execution.create_time,
            start_time=min(starts) if starts else execution.start_time,
            end_time=max(ends) if ends else execution.completion_time,
            console_url=console,
            log_url=execution.log_uri,
        )

    def _unfinished_state(self) -> ItemState:
        return ItemState.CANCELLED if self.cancelled else ItemState.FAILED

    def _reason(self, worst: TaskResult, tasks: list[TaskStatus], launch: Launch) -> str:
        message = next((t.message for t in tasks if t.index == worst.index and t.message), None)
        if worst.state is ItemState.TIMED_OUT:
            limit = f" of {launch.timeout_seconds:.0f}s" if launch.timeout_seconds else ""
            return f"task {worst.index} ran past its timeout{limit}" + (f": {message}" if message else "")
        if worst.state is ItemState.CANCELLED:
            return "cancelled" + (f": {message}" if message else "")
        if worst.exit_code is not None:
            return f"task {worst.index} exited with code {worst.exit_code} after {worst.attempts} attempt(s)"
        return message or f"task {worst.index} did not finish"

    def console_url(self, execution: str) -> str:
        return (
            f"https://console.cloud.google.com/run/jobs/executions/details/{self.cloud.region}/"
            f"{short_name(execution)}/tasks?project={self.cloud.project}"
        )

    def launch_results(self) -> list[LaunchResult]:
        out = []
        for state in self.states:
            execution = state.execution
            out.append(
                LaunchResult(
                    index=state.launch.index,
                    key=state.launch.key,
                    job=state.launch.job,
                    packed=state.launch.packed,
                    items=len(state.launch.items),
                    execution=execution.name if execution else None,
                    state=(execution.outcome or "unfinished") if execution else (state.error or "not launched"),
                    create_time=execution.create_time if execution else None,
                    start_time=execution.start_time if execution else None,
                    end_time=execution.completion_time if execution else None,
                    console_url=self.console_url(execution.name) if execution else None,
                )
            )
        return out

    def report(self, items: list[ItemResult], *, flow_run_id: str | None = None) -> Report:
        finished = self.now()
        duration = (finished - self.started_at).total_seconds()
        summary = summarize(items, launches=len(self.states), duration_seconds=duration)
        return Report(
            batch_id=self.plan.batch.batch_id,
            status=batch_status(summary, cancelled=self.cancelled),
            flow_run_id=flow_run_id,
            spec_digest=self.plan.batch.digest,
            project=self.cloud.project,
            region=self.cloud.region,
            mode=str(self.plan.mode),
            started_at=self.started_at,
            finished_at=finished,
            summary=summary,
            launches=self.launch_results(),
            items=items,
            problems=[self.redact(p) for p in self.problems],
        )


def _remaining_seconds(status: ExecutionStatus, first: tuple[float, int], now: float) -> float | None:
    """Seconds until the execution's last task ends at the pace its tasks have finished since it was
    first polled; None while that pace is unknown (no task finished yet, or a single-task execution)."""
    since, finished_then = first
    finished = status.finished_tasks - finished_then
    if status.done or finished <= 0 or now <= since:
        return None
    return (status.task_count - status.finished_tasks) * (now - since) / finished


class _Identity(TypedDict):
    """The fields every ItemResult of an item has, whatever became of it."""

    key: str
    index: int
    job: str
    label: str | None
    launch: int


_SEVERITY = {
    ItemState.TIMED_OUT: 0,
    ItemState.FAILED: 1,
    ItemState.CANCELLED: 2,
    ItemState.NOT_LAUNCHED: 3,
    ItemState.SUCCEEDED: 4,
}

__all__ = ["BatchConflict", "BatchRunner", "BatchStatus", "LaunchState", "PollPolicy", "Redactor"]
