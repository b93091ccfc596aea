"""Running a planned batch: launch, watch, cancel, collect, and turn what happened into item results.

Plain Python with injected clock and waits, so tests drive it exactly and the Prefect flow (``flow.py``)
stays a thin layer that maps these steps onto task runs. Thread-safe where the flow needs it: launches
run on a pool of threads while the watcher polls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from google.api_core import exceptions as gexc

from controller.attempts import Attempts
from controller.batchfolder import reader, save_spec, write_items
from controller.cloudrun import CloudRun, ExecutionOutcome, ExecutionStatus, LaunchUnverified, TaskStatus, short_name
from controller.launch_state import LaunchState
from controller.logs import Tail, TailTarget, fetch_tails
from controller.outcomes import INTERIM_PROBLEM, Outcomes
from controller.ownership import (
    BatchConflict,
    BatchOwned,
    FencedStore,
    Lease,
    LeaseLost,
    Owner,
    acquire,
    lease_seconds,
)
from controller.pace import Pace, PollPolicy
from controller.plan import ENV_LAUNCH_KEY, Launch, Plan, manifest_chunks, retry_launch
from controller.policy import RetryPolicy, StopRule
from controller.redact import Redactor, as_text
from controller.report import (
    BatchLink,
    BatchStatus,
    ItemResult,
    ItemState,
    LaunchResult,
    Report,
    StoredItems,
    Summary,
    batch_status,
    summarize,
)
from controller.results import Found, collect_results, list_results, make_item_folders, with_result
from controller.retry import api_error_message, is_retryable
from controller.slots import TaskSlots
from controller.store import Store
from controller.tasktable import TaskTable

log = logging.getLogger(__name__)

CANCEL_SECONDS = 60.0  # a cancelled batch's wait for RunJob calls in flight and its executions to stop
INTERRUPT_CHECK_SECONDS = 0.2  # how soon the watch notices a signal while it waits for the next poll


class Interrupts:
    """The signals taken while ``taken`` (the CLI's handlers are set), as the words for what stopped the batch."""

    def __init__(self) -> None:
        self.taken = False
        self.pending: list[str] = []


# The signals the CLI took (SIGINT, SIGTERM), in the words that say what stopped the batch: the watch raises
# them as KeyboardInterrupt between polls. A handler that raised at once could land in the middle of a lock's
# __enter__ (httpcore's connection pool during a Prefect API call), leaving it held: the flow's next API call
# then waited for it forever, and so did the run.
interrupts = Interrupts()


def cloud_error(exc: Exception) -> str | None:
    """What went wrong, if ``exc`` says Cloud Run refused or could not be reached (after the retry policy
    gave up), else None: such errors are recorded in the report; any other exception is a bug and propagates."""
    if isinstance(exc, gexc.GoogleAPICallError):
        return api_error_message(exc)
    if is_retryable(exc):
        return f"{type(exc).__name__}: {exc}"
    return None


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
    sleep: Callable[[float], None] = time.sleep
    lease_seconds: float = field(default_factory=lease_seconds)  # FANOUT_LEASE_SECONDS
    rerun_of: BatchLink | None = None  # the batch whose items this one reruns (controller.rerun)
    retry: RetryPolicy | None = None  # replaces the spec's defaults.retry (--retry)
    stop: StopRule | None = None  # replaces the spec's max_failures (--max-failures)
    # Called with each item's result as soon as it is its last (controller.stream): from the watcher as tasks
    # end, and for the rest as the report is made (``emitting``). Each item once.
    on_result: Callable[[ItemResult], None] | None = None

    def __post_init__(self) -> None:
        self.states = [LaunchState(launch) for launch in self.plan.launches]
        self.started_at = self.now()
        self.redact = Redactor(self.plan.batch.sensitive_values())
        self.problems: list[str] = []
        self.cancelled = False
        self.lease: Lease | None = None
        self.resumed: bool | None = None  # whether open_batch found the batch (None: not opened here)
        self.cloud_lost: str | None = None  # why the controller stopped hearing from Cloud Run
        self._told_lease_ran_out = False
        self.cancel_failed: set[str] = set()  # executions whose cancellation Cloud Run never accepted
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, self.concurrency))
        self.task_slots = TaskSlots(self.plan.max_running_tasks)  # --max-running-tasks (controller.slots)
        self._start_clock = self.clock()
        self.attempts = Attempts(self.plan.batch, retry=self.retry, stop=self.stop)
        self.stopped: str | None = None  # why the batch stopped early (max_failures), once it did
        self._key_prefix = f"{self.plan.batch.batch_id}/"  # of retry launches' keys, as of the plan's
        self._retry_pool: ThreadPoolExecutor | None = None
        self._retry_futures: list[Future[LaunchState]] = []
        self._emitted: set[int] = set()  # items handed to on_result
        self._counted: dict[str, Counter[str]] = {}  # ended launches' items by state, by launch key (progress)
        self._watched_ends = self.attempts.watched or self.on_result is not None

    # -- before launching ----------------------------------------------------------------------------

    def open_batch(self, *, project: str, region: str, flow_run_id: str | None = None) -> bool:
        """Create the batch next to its report, or take it over to resume it; returns True when resuming.
        This controller then holds the batch's lease (renewed in the background) until ``close``.

        Raises BatchConflict when the id belongs to a batch with a different spec, BatchOwned while another
        controller's lease on it is live.
        """
        batch = self.plan.batch
        fields = {
            "started_at": self.started_at.isoformat(),
            "project": project,
            "region": region,
            "mode": str(self.plan.mode),
            "launches": len(self.plan.launches),
            "items": len(batch.items),
        }
        self.lease, resumed = acquire(
            self.store,
            batch.batch_id,
            spec_digest=batch.digest,
            fields=fields,
            owner=Owner.this_process(flow_run_id),
            now=self.now,
            seconds=self.lease_seconds,
        )
        self.started_at = datetime.fromisoformat(self.lease.record["started_at"])
        # From here on every write of the batch's files checks the lease first: a controller that lost the
        # batch (paused past its lease, then taken over) writes nothing over the new owner's files.
        self.store = FencedStore(self.store, self.lease)
        if self.manifest_store is not None:
            self.manifest_store = FencedStore(self.manifest_store, self.lease)
        try:
            save_spec(self.store, batch)  # what a rerun of its items needs; literal secrets withheld
        except BaseException:
            self.lease.release()
            raise
        if nonce := self.lease.record.get("nonce"):
            self._key_prefix = f"{batch.batch_id}/{nonce}/"
            self.states = [
                LaunchState(_keyed(s.launch, f"{batch.batch_id}/{nonce}/{s.launch.index:05d}")) for s in self.states
            ]
        self.lease.start()
        self.resumed = resumed
        return resumed

    def close(self) -> None:
        """Release the batch's lease, so that a run after this one need not wait for it to run out."""
        if self.lease is not None:
            self.lease.release()

    def prepare(self, *, service_account: str | None = None) -> None:
        """Create one-off jobs and their tasks' result folders; write the manifests of packed launches."""
        for job in self.plan.one_off_jobs:
            try:
                self.cloud.ensure_job(job, service_account=service_account)
            except Exception as exc:
                if (problem := cloud_error(exc)) is None:
                    raise
                self._not_started(job.name, f"its one-off job {job.name} could not be created: {problem}")
        make_item_folders(self.store, self.plan)
        batch_id = self.plan.batch.batch_id
        for launch in self.plan.launches:  # one launch's manifests in memory at a time, not the batch's
            if launch.packed:
                files = [(f"manifests/{launch.index:05d}/{name}", data) for name, data in manifest_chunks(launch)]
                (self.manifest_store or self.store).write_many(batch_id, files)

    def adopt_existing(self) -> int:
        """Attach to executions this batch already started (a resumed run); returns how many. A batch just
        created has none (its launch keys carry a nonce made with it): nothing is listed. When a job's
        executions cannot be listed, its launches are not started: one already running would run twice."""
        if self.resumed is False:
            return 0
        by_key: dict[str, ExecutionStatus] = {}
        for job, keys in _keys_by_job(self.states).items():
            try:
                by_key.update(self.cloud.find_launched(job, keys, since=self.started_at))
            except Exception as exc:
                if (problem := cloud_error(exc)) is None:
                    raise
                self._not_started(job, f"what the batch already started could not be listed ({problem})")
        for state in self.states:
            if (found := by_key.get(state.launch.key)) is not None:
                state.execution, state.adopted = found, True
                self.task_slots.hold(state)
        return len(by_key)

    def _not_started(self, job: str, why: str) -> None:
        """Record why the pending launches of ``job`` will not start, as the batch's problem and theirs."""
        self.problems.append(self.redact(f"launches of {job} not started: {why}"))
        for state in self.pending():
            if state.launch.job == job:
                state.error = self.redact(f"not started: {why}")

    # -- launching -----------------------------------------------------------------------------------

    def pending(self) -> list[LaunchState]:
        return [s for s in self.states if s.execution is None and s.error is None and s.unverified is None]

    def launch(self, state: LaunchState) -> LaunchState:
        """Start one launch's execution (exactly once), once the running-task cap has room for it; records a
        refusal as the reason it never ran."""
        if (closed := self.task_slots.take(state)) is not None:
            state.error = closed
            return state
        try:
            with self._slots:
                # Checked while holding a slot: cancel() takes every slot first, so a launch either ends
                # before cancel() looks for executions to stop, or sees the cancellation and never starts.
                if self.stopped is not None:
                    state.error = f"not launched: the batch {self.stopped}"
                    return state
                if self.cancel_event.is_set():
                    state.error = _CANCELLED_BEFORE_START
                    return state
                guard = None if self.lease is None else self.lease.check
                execution = self.cloud.run(state.launch, since=self.started_at, guard=guard)
        except LeaseLost:
            assert self.lease is not None
            state.error = f"not started: this controller no longer holds the batch ({self.lease.problem()})"
        except LaunchUnverified as exc:
            state.unverified = self.redact(str(exc))
            log.warning("launch %s (%s): %s", state.launch.key, state.launch.job, state.unverified)
        except Exception as exc:
            if (problem := cloud_error(exc)) is None:
                raise
            what = "refused the run" if isinstance(exc, gexc.GoogleAPICallError) else "could not be reached"
            state.error = self.redact(f"Cloud Run {what}: {problem}")
            state.refused = True
            log.warning("launch %s (%s) failed: %s", state.launch.key, state.launch.job, state.error)
            if self._watched_ends:
                results = list(self.outcomes().item_results([state]))
                retried = self.attempts.ended(state.launch, results, self.clock(), refused=True)
                self._emit(state, results, retried)
        else:
            with self._lock:
                state.execution = execution
        finally:
            self.task_slots.changed()
        return state

    def launch_all(self, *, watch: bool = False) -> None:
        """Start every pending launch on ``concurrency`` threads (the flow uses Prefect tasks instead), then
        ``watch``. Under a running-task cap the watch runs meanwhile: it frees the slots launches wait for."""
        capped = watch and self.task_slots.limit is not None
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="launch") as pool:
            futures = [pool.submit(self.launch, state) for state in self.pending()]
            if capped:
                self.watch(launching_done=lambda: all(future.done() for future in futures))
        for future in futures:
            future.result()
        if watch and not capped:
            self.watch()

    # -- watching ------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Items by state for progress: pending, running and the terminal states known so far."""
        counts: Counter[str] = Counter()
        for state in self.states:
            items = len(state.launch.items)
            execution = state.execution
            if state.error is not None:
                counts[ItemState.NOT_LAUNCHED] += items
            elif state.unverified is not None:
                counts[ItemState.FAILED] += items  # as reported unless found later: outcome unknown
            elif execution is None:
                counts["pending"] += items
            elif execution.done and state.tasks is not None:
                counts.update(self._ended_counts(state))
            elif state.launch.packed:
                counts[ItemState.SUCCEEDED] += execution.succeeded
                counts[ItemState.FAILED] += execution.failed
                counts[ItemState.CANCELLED] += execution.cancelled
                counts["running"] += execution.running
                counts["pending"] += max(0, items - execution.finished_tasks - execution.running)
            elif execution.outcome is not None:
                counts[_ITEM_STATE_OF.get(execution.outcome, ItemState.FAILED)] += 1
            else:
                counts["running" if execution.start_time else "pending"] += 1
        self.attempts.progress(counts)
        return dict(counts)

    def _ended_counts(self, state: LaunchState) -> Counter[str]:
        """An ended launch's items by state, as its results read (the report's classification, so a task that
        ran past its timeout counts as timed out, not as failed), made once: they no longer change."""
        counted = self._counted.get(state.launch.key)
        if counted is None:
            counted = self._counted[state.launch.key] = Counter(r.state for r in self.outcomes().item_results([state]))
        return counted

    def _deadline_passed(self) -> bool:
        return self.deadline_seconds is not None and self.clock() - self._start_clock > self.deadline_seconds

    def watch(self, launching_done: Callable[[], bool] = lambda: True) -> None:
        """Poll until every started execution has ended and launching is over, or until cancelled, past the
        batch deadline (then cancel), no longer the batch's owner, or Cloud Run stopped answering."""
        pace = Pace(self.poll)
        while True:
            if interrupts.pending:
                raise KeyboardInterrupt(interrupts.pending[0])
            # Launching is asked first: a launch that ends between the two looks is then among the active ones.
            # Asked second, the last launch (late under a running-task cap) could end unseen and go unwatched.
            launched = launching_done() and self._retries_launched()
            with self._lock:
                active = [s for s in self.states if s.active]
            if not active and launched:
                break
            if self._deadline_passed():
                self.problems.append(f"the batch passed its deadline of {self.deadline_seconds:.0f}s")
                self.cancel_event.set()
            if self.cancel_event.is_set() or self._lease_lost():
                break
            if active and not self._poll_active(active, pace):
                break
            self._check_stop()
            self._launch_retries()
            if self.task_slots.waiting and any(s.unverified for s in self.states):
                self._look_for_unverified()  # their slots stay taken until Cloud Run says whether they started
            if self.progress:
                self.progress(self.counts())
            self._wait(self._next_wait(pace, waiting_for_launches=not active or self.task_slots.waiting))
        self._watched()

    def _wait(self, seconds: float) -> None:
        """Until the next poll, or sooner when the batch is cancelled or a signal asks it to stop (a signal
        handler only records it: see ``interrupts``)."""
        if not interrupts.taken:
            self.cancel_event.wait(seconds)
            return
        until = self.clock() + seconds
        while not interrupts.pending and (left := until - self.clock()) > 0:
            if self.cancel_event.wait(min(left, INTERRUPT_CHECK_SECONDS)):
                return

    def _next_wait(self, pace: Pace, *, waiting_for_launches: bool) -> float:
        """Until the next poll: the pace's, or sooner when a retry's backoff runs out first."""
        wait = pace.next(waiting_for_launches=waiting_for_launches)
        if (due := self.attempts.next_due()) is not None:
            wait = min(wait, max(0.0, due - self.clock()))
        return wait

    def _watched(self) -> None:
        """The watch is over: nothing launches any more, and what must be cancelled is."""
        if not self.cancel_event.is_set():  # nothing frees slots any more: launches still waiting never start
            self.task_slots.close(self._why_stopped())
        if self.attempts.waiting:
            self.attempts.give_up("the batch stopped before its backoff ran out")
        self._look_for_unverified()
        if self.cancel_event.is_set():
            self.cancel()
        if self._retry_pool is not None:
            self._retry_pool.shutdown(wait=True)

    # -- retrying and stopping early ---------------------------------------------------------------------

    def _retries_launched(self) -> bool:
        """Whether no retry waits for its backoff and every retry launch has been sent (or refused)."""
        return not self.attempts.waiting and all(future.done() for future in self._retry_futures)

    def _ended(self, state: LaunchState) -> _Ended | None:
        """A launch's execution ended: its items' attempts are recorded (retries queued) when a retry policy, a
        stop rule or a result sink needs them; returns its results and the items retried. Its tasks are read
        now rather than after the batch; when they cannot be, the launch is decided on nothing: no retry, and
        its failures wait for the report."""
        assert state.execution is not None
        # An execution with failed tasks has them read now rather than after the batch (``collect_tasks``
        # skips them then): only its tasks tell one that ran past its timeout from one that failed, and the
        # live progress counts them apart, as the report does.
        needed = self._watched_ends or state.execution.failed > 0
        if needed and state.tasks is None and not self._read_tasks(state):
            return None
        if not self._watched_ends:
            if state.tasks is not None and len(state.tasks) < state.execution.task_count:
                # Cloud Run's lists are eventually consistent: a short one is read again after the batch
                # (``collect_tasks``) rather than decide the report; only the live counts went without it.
                state.tasks = None
            return None
        results = list(self.outcomes().item_results([state]))
        return state, results, self.attempts.ended(state.launch, results, self.clock())

    def _emit(self, state: LaunchState, results: Iterable[ItemResult], retried: Set[int] = frozenset()) -> None:
        """Hand ``on_result`` the results that are their items' last, with the values their tasks wrote."""
        if self.on_result is None:
            return
        tasks = 1 if state.launch.packed else state.launch.task_count
        batch_id = self.plan.batch.batch_id
        for ended in results:
            with self._lock:
                if ended.index in retried or ended.index in self._emitted:
                    continue
                self._emitted.add(ended.index)
            valued = ended
            try:
                valued = with_result(self.store, batch_id, ended, tasks, self.redact)
            except Exception as exc:  # the report reads it again; a stream without the value still streams
                log.warning("result of %s not read as it ended: %s", ended.key, self.redact(str(exc)))
            self.on_result(valued)

    def _ended_tasks(self, state: LaunchState) -> _Ended:
        """For a packed execution still running: its items whose tasks ended and whose result is final, to hand
        to ``on_result`` now rather than when the whole execution ends."""
        assert state.execution is not None
        try:
            tasks = self.cloud.list_tasks(state.execution.name)
        except Exception as exc:
            if cloud_error(exc) is None:
                raise
            return state, [], frozenset()  # the next poll, or the end of the launch, reads them again
        ended = {task.index for task in tasks if task.state is not None}
        positions = {item.index: position for position, item in enumerate(state.launch.items)}
        items = {item.index: item for item in state.launch.items}
        results = [
            result
            for result in self.outcomes().item_results([replace(state, tasks=TaskTable(tasks))])
            if positions[result.index] in ended
            and self.attempts.final_when_it_ends(items[result.index], state.launch, result)
        ]
        return state, results, frozenset()

    def emitting(self, items: Iterable[ItemResult]) -> Iterator[ItemResult]:
        """``items``, each handed to ``on_result`` first unless it was already (never launched, cancelled, ended
        unseen), as the report has them: the stream's last items, made as the report's shards are written."""
        for item in items:
            if self.on_result is not None and item.index not in self._emitted:
                self._emitted.add(item.index)
                self.on_result(item)
            yield item

    def _check_stop(self) -> None:
        """Stop early once the stop rule's count of failed items is reached: failures that can no longer be
        retried, in launches that ended and (packed) in those still running."""
        if self.stopped is not None or self.attempts.stop is None:
            return
        with self._lock:
            in_flight = sum(
                s.execution.failed
                for s in self.states
                if s.active and s.execution is not None and s.launch.packed and not self.attempts.may_retry(s.launch)
            )
        if (reason := self.attempts.stop_reason(in_flight)) is None:
            return
        self.stopped = reason
        cancel = self.attempts.stop.action == "cancel"
        self.problems.append(
            f"the batch {reason}: nothing more was launched and "
            + ("what still ran was cancelled" if cancel else "what still ran was let finish (on_max_failures: finish)")
        )
        log.warning("batch %s %s", self.plan.batch.batch_id, reason)
        self.attempts.give_up(f"the batch {reason}")
        self.task_slots.close(f"not launched: the batch {reason}")
        if cancel:
            self.cancel_event.set()

    def _launch_retries(self) -> None:
        """Launch the retries whose backoff is over: a new launch of just those items, packed where they were,
        under a key that names the attempt, so a lost RunJob answer is looked up as for any launch."""
        if self.stopped is not None or self.cancel_event.is_set():
            return
        for template, items, attempt in self.attempts.due(self.clock()):
            index = len(self.states)
            key = f"{self._key_prefix}{index:05d}/attempt-{attempt}"
            state = LaunchState(retry_launch(template, items, index=index, key=key, attempt=attempt))
            if state.launch.packed:
                files = [(f"manifests/{index:05d}/{name}", data) for name, data in manifest_chunks(state.launch)]
                (self.manifest_store or self.store).write_many(self.plan.batch.batch_id, files)
            with self._lock:
                self.states.append(state)
            if self._retry_pool is None:
                self._retry_pool = ThreadPoolExecutor(max(1, self.concurrency), thread_name_prefix="retry")
            self._retry_futures.append(self._retry_pool.submit(self.launch, state))

    def _why_stopped(self) -> str:
        if self.cloud_lost:
            return f"not started: Cloud Run stopped answering ({self.cloud_lost})"
        if self.lease is not None and self.lease.lost:
            return f"not started: this controller no longer holds the batch ({self.lease.lost})"
        return "not started: the batch stopped before a running task made room"

    def _lease_lost(self) -> bool:
        """Whether to stop watching: another controller took the batch over (it watches the executions now).
        A lease that ran out while batch.json could not be written stops the launches, not the watch: reading
        what Cloud Run says is no act of an owner, and the report then tells how the executions ended."""
        if self.lease is None or self.lease.lost is None:
            return False
        if self.lease.taken:
            self.problems.append(f"stopped watching: {self.lease.lost}")
            return True
        if not self._told_lease_ran_out:
            self._told_lease_ran_out = True
            self.problems.append(
                f"{self.lease.lost}; from then on nothing was launched or cancelled, and the executions already "
                "started were watched to their end"
            )
        return False

    def _poll_active(self, active: list[LaunchState], pace: Pace) -> bool:
        """One poll of the running executions; False (and the reason recorded) when Cloud Run is lost."""
        try:
            statuses = self.cloud.poll(_names_by_job(active), since=self.started_at)
        except Exception as exc:
            if (problem := cloud_error(exc)) is None:
                raise
            self._lose_cloud(problem, active)
            return False
        now = self.clock()
        ended: list[LaunchState] = []
        progressed: list[LaunchState] = []
        with self._lock:
            for state in active:
                assert state.execution is not None
                status = statuses.get(state.execution.name)
                if status is not None:
                    if status.done:
                        ended.append(state)
                    elif state.launch.packed and status.finished_tasks > state.execution.finished_tasks:
                        progressed.append(state)
                    state.execution = status
                    pace.observe(status, now)
        finished = [outcome for state in ended if (outcome := self._ended(state)) is not None]
        if self.on_result is not None:
            finished += [self._ended_tasks(state) for state in progressed]
        # Handed over in the order the items ended, not the spec's or the launches', when several ended since
        # the last poll: across launches too (one-off mode launches each item alone, and a poll that a loaded
        # machine held back sees several of them done at once).
        seen = [(result, state, retried) for state, results, retried in finished for result in results]
        for result, state, retried in sorted(seen, key=lambda entry: _end_time(entry[0])):
            self._emit(state, [result], retried)
        # Before the slots are freed: a launch waiting for room must not start once the batch should stop.
        self._check_stop()
        self.task_slots.changed()
        return True

    def _lose_cloud(self, problem: str, active: list[LaunchState]) -> None:
        self.cloud_lost = self.redact(problem)
        seen = ", ".join(
            f"{short_name(s.execution.name)} ({'running' if s.execution.start_time else 'pending'})"
            for s in active
            if s.execution is not None
        )
        self.problems.append(
            f"Cloud Run stopped answering ({self.cloud_lost}); the outcome of {len(active)} execution(s) is "
            f"unknown, last seen: {seen}"
        )

    def _look_for_unverified(self) -> None:
        """Look once more for the launches whose RunJob could not be verified: found, they are adopted."""
        unverified = [s for s in self.states if s.unverified is not None]
        if not unverified or self.cloud_lost:
            return
        for job, keys in _keys_by_job(unverified).items():
            try:
                found = self.cloud.find_launched(job, keys, since=self.started_at)
            except Exception as exc:
                if cloud_error(exc) is None:
                    raise
                continue
            for state in unverified:
                if (execution := found.get(state.launch.key)) is not None:
                    state.execution, state.unverified, state.adopted = execution, None, True
                elif state.launch.job == job:  # Cloud Run answered and it is not there: it holds no tasks
                    self.task_slots.forget(state)
        self.task_slots.changed()

    def cancel(self, *, wait_seconds: float = CANCEL_SECONDS) -> None:
        """Cancel every execution of the batch still running, then wait until they have stopped, all within
        ``wait_seconds``. What Cloud Run did not confirm is recorded: such items are never reported as cancelled.

        A controller that lost the batch's lease cancels nothing: its executions may be another controller's
        now, adopted when it took the batch over."""
        self.cancel_event.set()
        self.task_slots.close(_CANCELLED_BEFORE_START)
        if self.lease is not None and self.lease.lost is not None:
            self.problems.append(f"nothing cancelled: this controller no longer holds the batch ({self.lease.lost})")
            return
        self.cancelled = True
        deadline = self.clock() + wait_seconds
        with self._lock:
            first = [s for s in self.states if s.active]
        self._request_cancellation(first)  # at once: the wait below may be cut short (SIGKILL)
        # Let RunJob calls already in flight finish, so the executions they start are cancelled too.
        taken = 0
        for _ in range(max(1, self.concurrency)):
            if not self._slots.acquire(timeout=max(0.0, deadline - self.clock())):
                break
            taken += 1
        for _ in range(taken):
            self._slots.release()
        asked = {id(s) for s in first}
        with self._lock:
            active = [s for s in self.states if s.active]
        self._request_cancellation([s for s in active if id(s) not in asked])
        self._wait_stopped(active, max(0.0, deadline - self.clock()))

    def _request_cancellation(self, active: list[LaunchState]) -> None:
        names = [s.execution.name for s in active if s.execution is not None]
        if self.cloud_lost:
            self.cancel_failed.update(names)  # one unreachable Cloud Run is enough: the rest would fail alike
            return
        for name, exc in self.cloud.cancel_all(names, concurrency=self.concurrency).items():
            if (problem := cloud_error(exc)) is None:
                raise exc
            self.cancel_failed.add(name)
            self.problems.append(self.redact(f"could not cancel {short_name(name)}: {problem}"))
            if not isinstance(exc, gexc.GoogleAPICallError):
                self.cloud_lost = self.redact(problem)

    def _wait_stopped(self, active: list[LaunchState], wait_seconds: float) -> None:
        deadline = self.clock() + wait_seconds
        waiting = [s for s in active if s.execution is not None and s.execution.name not in self.cancel_failed]
        while waiting and self.clock() < deadline:
            try:
                statuses = self.cloud.poll(_names_by_job(waiting), since=self.started_at)
            except Exception as exc:
                if (problem := cloud_error(exc)) is None:
                    raise
                self.problems.append(self.redact(f"could not confirm that the executions stopped: {problem}"))
                break
            for state in waiting:
                assert state.execution is not None
                state.execution = statuses.get(state.execution.name, state.execution)
            waiting = [s for s in waiting if s.active]
            if waiting:
                self.sleep(min(self.poll.fastest, 1.0))
        if still := [s for s in active if s.active]:
            self.problems.append(
                f"{len(still)} execution(s) not seen stopping {wait_seconds:.0f}s after cancellation: "
                + ", ".join(short_name(s.execution.name) for s in still if s.execution)
            )

    # -- collecting ----------------------------------------------------------------------------------

    def collect_tasks(self) -> None:
        """Fetch task details where the execution alone cannot tell each item's outcome. Once Cloud Run is
        lost, what was last seen stands (each further call would only wait out its retries)."""
        for state in self.states:
            if state.execution is not None and state.tasks is None:  # read already when it ended (``_ended``)
                self._read_tasks(state)

    def _read_tasks(self, state: LaunchState) -> bool:
        """Read one launch's tasks into ``state.tasks``; False when they could not be (noted in problems)."""
        execution = state.execution
        assert execution is not None
        if not state.launch.packed and execution.task_count == 1 and execution.outcome is ExecutionOutcome.SUCCEEDED:
            state.tasks = TaskTable(
                [
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
            )
            return True
        if self.cloud_lost:
            return False
        try:
            state.tasks = TaskTable(self.cloud.list_tasks(execution.name))
        except Exception as exc:
            if (problem := cloud_error(exc)) is None:
                raise
            self.problems.append(self.redact(f"task details of {short_name(execution.name)} unavailable: {problem}"))
            if not isinstance(exc, gexc.GoogleAPICallError):
                self.cloud_lost = self.redact(problem)
            return False
        return True

    def tail_targets(self, results: Iterable[ItemResult], *, all_items: bool = False) -> list[TailTarget]:
        return [
            TailTarget(key=r.key, execution=short_name(r.execution), task_index=r.task_index)
            for r in results
            if r.execution and (all_items or not r.state.ok) and r.state is not ItemState.NOT_LAUNCHED
        ]

    def log_tails(
        self,
        results: Iterable[ItemResult],
        logging_client: object,
        *,
        all_items: bool = False,
        max_lines: int = 50,
        max_bytes: int = 8192,
        max_calls: int = 20,
        max_seconds: float = 60.0,
        log_resource: str | None = None,
    ) -> dict[str, Tail]:
        """The log tails of the failed items of ``results`` (or all), by item key. A Logging failure leaves
        them without tails and notes it; it never fails the report."""
        targets = self.tail_targets(results, all_items=all_items)
        if not targets:
            return {}
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
            return {}
        if stats.incomplete:
            self.problems.append("some log tails are incomplete: the Cloud Logging call or time budget ran out")
        if stats.unreadable:
            self.problems.append(f"log tails: {stats.unreadable:,} log entries could not be read and were left out")
        return tails

    def finished_items(
        self, tails: Mapping[str, Tail], *, read_results: bool = True, chunk: int = 1000
    ) -> Iterator[ItemResult]:
        """Every item's result in spec order, with its log tail and (``read_results``: the store can be read)
        the value its task wrote to ``$FANOUT_RESULT_FILE`` (``controller.results``), made ``chunk`` items at a
        time as they are asked for. Results that cannot be read leave items without them and are noted; they
        never fail the report."""
        batch_id = self.plan.batch.batch_id
        found: Found = {}
        try:
            found = list_results(self.store, batch_id) if read_results else {}
        except Exception as exc:
            self.problems.append(self.redact(f"item results unavailable: {type(exc).__name__}: {exc}"))
        pending: list[ItemResult] = []
        for item in self.iter_item_results():
            tail = tails.get(item.key)
            pending.append(replace(item, **tail.fields()) if tail is not None else item)
            if len(pending) >= chunk:
                yield from self._with_results(pending, found)
                pending = []
        yield from self._with_results(pending, found)

    def _with_results(self, items: list[ItemResult], found: Found) -> list[ItemResult]:
        if not found or not items:
            return items
        tasks = {}
        for item in items:
            launch = self.states[item.launch].launch if item.launch is not None else None
            tasks[item.key] = 1 if launch is None or launch.packed else launch.task_count
        try:
            return collect_results(self.store, self.plan.batch.batch_id, items, tasks, self.redact, found=found)
        except Exception as exc:
            self.problems.append(self.redact(f"item results unavailable: {type(exc).__name__}: {exc}"))
            return items

    def outcomes(self) -> Outcomes:
        """How the launches' states read as results, given what the runner knows now."""
        return Outcomes(
            cancelled=self.cancelled,
            cloud_lost=self.cloud_lost,
            cancel_failed=frozenset(self.cancel_failed),
            redact=self.redact,
            console_url=self.console_url,
            stopped=self.stopped,
        )

    def item_results(self) -> list[ItemResult]:
        """One result per item of the batch, every one in a terminal state, in spec order."""
        return list(self.iter_item_results())

    def iter_item_results(self) -> Iterator[ItemResult]:
        """``item_results`` one at a time, each made when asked for."""
        return self.attempts.with_histories(self.outcomes().item_results(self.states))

    def interim_report(self, *, flow_run_id: str | None = None) -> Report:
        """The report as the batch stands when it is interrupted, before it is cancelled, made without a
        call to Cloud Run: what ended and was read reads as it ended, the rest "outcome unknown". Stored
        first, so that a controller killed while cancelling (a Prefect runner SIGKILLs 30 s after its
        SIGTERM) still leaves a report with every item; the report made after the cancellation replaces it."""
        outcomes = replace(self.outcomes(), cancelled=True, interim=True)
        return self.stored_report(
            self.attempts.with_histories(outcomes.item_results(self.states)),
            flow_run_id=flow_run_id,
            outcomes=outcomes,
            problems=[INTERIM_PROBLEM],
        )

    def launch_results(self) -> list[LaunchResult]:
        return self.outcomes().launch_results(self.states)

    def console_url(self, execution: str) -> str | None:
        """The execution in the Cloud Console; None on an emulator, where no console could show it."""
        if self.cloud.clients.endpoints.cloud_run is not None:
            return None
        return (
            f"https://console.cloud.google.com/run/jobs/executions/details/{self.cloud.region}/"
            f"{short_name(execution)}/tasks?project={self.cloud.project}"
        )

    def write_items(self, items: Iterable[ItemResult], store: Store | None = None) -> tuple[StoredItems, Summary]:
        """``items`` (in spec order) written to the item shards of ``store`` (default: the batch's) as they come
        and counted meanwhile, so that they are never all in memory; the stored items and their summary."""
        where = store or self.store
        batch_id = self.plan.batch.batch_id
        shards, tally = write_items(where, batch_id, items)
        duration = (self.now() - self.started_at).total_seconds()
        summary = tally.summary(launches=len(self.states), duration_seconds=duration)
        return StoredItems(shards, reader(where, batch_id)), summary

    def stored_report(
        self,
        items: Iterable[ItemResult],
        *,
        flow_run_id: str | None = None,
        outcomes: Outcomes | None = None,
        problems: Iterable[str] = (),
    ) -> Report:
        """``report`` of ``items`` with them written to the item shards first (``write_items``); report.json is
        the caller's to write (``batchfolder.store_report``), after the shards it names."""
        stored, summary = self.write_items(items)
        return self.report(stored, flow_run_id=flow_run_id, outcomes=outcomes, problems=problems, summary=summary)

    def report(
        self,
        items: list[ItemResult] | StoredItems,
        *,
        flow_run_id: str | None = None,
        outcomes: Outcomes | None = None,
        problems: Iterable[str] = (),
        summary: Summary | None = None,
    ) -> Report:
        """The batch's report of ``items``; launches read with ``outcomes`` (default: as the runner knows
        them now), ``problems`` listed before the runner's own; ``summary`` when the items were counted as
        they were written."""
        outcomes = outcomes or self.outcomes()
        finished = self.now()
        duration = (finished - self.started_at).total_seconds()
        summary = summary or summarize(items, launches=len(self.states), duration_seconds=duration)
        return Report(
            batch_id=self.plan.batch.batch_id,
            # Stopped early, a batch failed (items did), even when what still ran was cancelled.
            status=batch_status(summary, cancelled=outcomes.cancelled and self.stopped is None),
            flow_run_id=flow_run_id,
            spec_digest=self.plan.batch.digest,
            project=self.cloud.project,
            region=self.cloud.region,
            mode=str(self.plan.mode),
            started_at=self.started_at,
            finished_at=finished,
            summary=summary,
            launches=outcomes.launch_results(self.states),
            item_shards=list(items.shards) if isinstance(items, StoredItems) else None,
            items=items,
            problems=[as_text(self.redact(p)) for p in [*problems, *self.problems]],  # one bad text, one problem
            rerun_of=self.rerun_of,
            stopped=self.stopped,
        )


_Ended = tuple[LaunchState, list[ItemResult], Set[int]]
"""A launch, its items' results as it ended (or as far as its tasks ended), and the items to be retried."""


def _end_time(result: ItemResult) -> datetime:
    return result.end_time or datetime.max.replace(tzinfo=UTC)


def _names_by_job(states: Iterable[LaunchState]) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for state in states:
        if state.execution is not None:
            names.setdefault(state.launch.job, set()).add(state.execution.name)
    return names


def _keys_by_job(states: Iterable[LaunchState]) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for state in states:
        keys.setdefault(state.launch.job, set()).add(state.launch.key)
    return keys


def _keyed(launch: Launch, key: str) -> Launch:
    """The launch under another key (the one that names the batch uniquely), in its env override too."""
    env = tuple((name, key if name == ENV_LAUNCH_KEY else value) for name, value in launch.env)
    return replace(launch, key=key, env=env)


_CANCELLED_BEFORE_START = "the batch was cancelled before this launch started"
_ITEM_STATE_OF = {ExecutionOutcome.SUCCEEDED: ItemState.SUCCEEDED, ExecutionOutcome.CANCELLED: ItemState.CANCELLED}

__all__ = ["BatchConflict", "BatchOwned", "BatchRunner", "BatchStatus", "LaunchState", "PollPolicy"]
