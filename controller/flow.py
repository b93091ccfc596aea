"""The Prefect 3 flow: one flow run per batch, a task run per launch (not per packed item).

spec -> validate -> plan -> launch (tasks, bounded concurrency) while watching -> cancel if asked ->
collect -> log tails -> report -> store, the last three in a ``finally`` so a failed or cancelled batch
still leaves a complete report.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from controller.offline import apply_quiet_defaults

apply_quiet_defaults()

from prefect import Flow, flow, get_run_logger, task  # noqa: E402 - quiet defaults must precede Prefect
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.client.schemas.objects import State  # noqa: E402
from prefect.exceptions import TerminationSignal  # noqa: E402
from prefect.futures import PrefectConcurrentFuture  # noqa: E402
from prefect.runtime import flow_run as current_flow_run  # noqa: E402
from prefect.states import Cancelled, Completed, Failed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from controller import rerun as reruns  # noqa: E402
from controller import results  # noqa: E402
from controller.batch import CANCEL_SECONDS, BatchRunner, LaunchState, PollPolicy  # noqa: E402
from controller.batchfolder import REPORT_FILE, finished_notice, standing_report, store_report, write_html  # noqa: E402
from controller.catalog import Catalog  # noqa: E402
from controller.clients import Clients, Endpoints, load_credentials  # noqa: E402
from controller.cloudrun import CloudRun  # noqa: E402
from controller.gc_pause import gc_paused  # noqa: E402
from controller.logs import Tail  # noqa: E402
from controller.options import RunOptions, flow_docstring, flow_signature  # noqa: E402
from controller.ownership import LeaseLost  # noqa: E402
from controller.plan import Mode, Plan, ResultsVolume, plan  # noqa: E402
from controller.policy import RetryPolicy, StopAction, StopRule, parse_max_failures  # noqa: E402
from controller.quota import Budget, Rates  # noqa: E402
from controller.report import BatchLink, BatchStatus, ItemResult, ItemState, Report  # noqa: E402
from controller.spec import MAX_SPEC_BYTES, Batch, load_batch  # noqa: E402
from controller.store import LocalStore, Store, StoreError, open_bucket_block, open_store  # noqa: E402
from controller.summary import plural  # noqa: E402
from controller.target import choose_target, serving  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = RunOptions.model_fields["concurrency"].default
MAX_LAUNCH_THREADS = 64
# Where a report goes when its store cannot take it: this folder in the working directory, else in the
# temporary directory.
UNSTORED_FOLDER = "fanout-unstored-reports"

# The CLI shows live progress; the flow reports counts to whatever sink is set for the current context.
progress_sink: contextvars.ContextVar[Callable[[Mapping[str, int]], None] | None] = contextvars.ContextVar(
    "progress_sink", default=None
)
# A batch and catalog the caller (the CLI) already loaded and validated in this process, so a run reads and
# checks its spec once.
prepared_batch: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("prepared_batch", default=None)
prepared_catalog: contextvars.ContextVar[Catalog | None] = contextvars.ContextVar("prepared_catalog", default=None)
# And hands the report back to an in-process caller without a round trip through storage (``execute`` calls it
# as soon as the report is stored, also when the batch was interrupted).
report_sink: contextvars.ContextVar[Callable[[Report, str], None] | None] = contextvars.ContextVar(
    "report_sink", default=None
)
# And each item's result as soon as it is its last, while the batch runs (controller.stream): every item once.
result_sink: contextvars.ContextVar[Callable[[ItemResult], None] | None] = contextvars.ContextVar(
    "result_sink", default=None
)


@dataclass(frozen=True)
class Options:
    """How the runner runs a batch: a run's options (``RunOptions``) resolved against the catalog."""

    project: str
    region: str
    report_to: str
    concurrency: int = DEFAULT_CONCURRENCY
    mode: Mode = Mode.AUTO
    deadline_seconds: float | None = None
    logs_for: str = "failed"  # "failed" | "all" | "none"
    log_lines: int = 50
    rates: Rates = field(default_factory=Rates)
    poll: PollPolicy = field(default_factory=PollPolicy)
    service_account: str | None = None  # identity of the one-off jobs the controller creates
    log_resource: str | None = None  # where to read job logs: the project, or a log view
    max_running_tasks: int | None = None  # the batch's cap on tasks running at once (controller.slots)
    retry: RetryPolicy | None = None  # replaces the spec's defaults.retry (controller.policy)
    max_failures: int | float | None = None  # replaces the spec's max_failures
    on_max_failures: StopAction | None = None

    @classmethod
    def resolve(cls, run: RunOptions, catalog: Catalog, *, project: str, report_to: str) -> Options:
        """The runner's settings: a run's options with the catalog's defaults filled in."""
        return cls(
            project=project,
            region=run.region or catalog.region or "us-central1",
            report_to=report_to,
            concurrency=run.concurrency,
            mode=Mode(run.mode),
            deadline_seconds=run.deadline_seconds,
            logs_for=run.logs_for,
            rates=run.budget(),
            poll=PollPolicy(fastest=run.poll_interval, slowest=max(30.0, run.poll_interval)),
            service_account=catalog.jobs_service_account,
            log_resource=catalog.log_view,
            max_running_tasks=run.max_running_tasks,
            retry=run.retry_policy,
            max_failures=None if run.max_failures is None else parse_max_failures(run.max_failures),
            on_max_failures=run.on_max_failures,
        )

    def stop_rule(self, batch: Batch) -> StopRule | None:
        """The batch's stop rule: these options' max_failures and on_max_failures over the spec's."""
        spec = batch.stop
        count = self.max_failures if self.max_failures is not None else spec.max_failures if spec else None
        if count is None:
            return None
        return StopRule(count, self.on_max_failures or (spec.action if spec else "cancel"))


# Batches running in this process, by id. Tasks take the batch id (a plain, visible parameter in the UI)
# rather than the runner itself, which Prefect would otherwise walk and hash for every task run.
_running: dict[str, BatchRunner] = {}


# Task results are never persisted, whatever the flow's result settings: the report is the record, and a
# per-item batch would otherwise write one result object per launch to the result storage.
@task(name="launch", cache_policy=NO_CACHE, persist_result=False, task_run_name="launch-{index}")
def launch_task(batch_id: str, index: int) -> str | None:
    """Start one execution. Returns its name, or None when Cloud Run refused it (the reason is recorded)."""
    runner = _running[batch_id]
    state = runner.launch(runner.states[index])
    if state.execution is None:
        get_run_logger().warning("launch %s: %s", state.launch.key, state.error or state.unverified)
        return None
    return state.execution.name


@task(name="prepare", cache_policy=NO_CACHE, persist_result=False)
def prepare_task(batch_id: str, service_account: str | None) -> int:
    """Create one-off jobs, write manifests, and find executions a previous run of this batch started."""
    runner = _running[batch_id]
    runner.prepare(service_account=service_account)
    return runner.adopt_existing()


def _results_volume(store: Store, batch_id: str, clients: Clients) -> ResultsVolume | None:
    """Where one-off jobs mount the results folder; a local one only on an emulator that maps it."""
    emulator = clients.endpoints.cloud_run
    if emulator is None or store.url(batch_id).startswith("gs://"):
        return results.volume(store, batch_id, {})
    from controller.emulator_jobs import emulator_buckets

    return results.volume(store, batch_id, emulator_buckets(emulator))


def _watch(runner: BatchRunner, futures: list[PrefectConcurrentFuture[str | None]]) -> None:
    """Watch in the flow's own thread while launch tasks run, so the progress is live from the start.

    Whether the launches are done is asked of this process's own futures, never of the Prefect API (a
    future's ``state`` reads the task run from the API until it is waited on): the API is a window on the
    batch, and a server that went away must cost the UI, not the batch's executions."""
    runner.watch(launching_done=lambda: all(f.wrapped_future.done() for f in futures))


def _launch_in_tasks(runner: BatchRunner) -> dict[int, UUID]:
    """Launch every pending launch as a task run while watching; returns the task runs by launch index."""
    batch_id = runner.plan.batch.batch_id
    task_runs: dict[int, UUID] = {}
    futures: list[PrefectConcurrentFuture[str | None]] = []
    for state in runner.pending():
        future = launch_task.submit(batch_id, state.launch.index)
        assert isinstance(future, PrefectConcurrentFuture)  # the flow's task runner is a thread pool
        task_runs[state.launch.index] = future.task_run_id
        futures.append(future)
    _watch(runner, futures)
    for future in futures:
        future.wait()  # the thread's own end: no call to the Prefect API
    if left := runner.pending():  # task runs that never ran their launch: the Prefect API would not record them
        log.warning("batch %s: %d launch(es) started without a task run", batch_id, len(left))
        runner.launch_all(watch=True)
    return task_runs


def execute(
    batch: Batch,
    catalog: Catalog,
    options: Options,
    *,
    clients: Clients,
    store: Store,
    manifest_store: Store | None = None,
    flow_run_id: str | None = None,
    use_prefect_tasks: bool = True,
    rerun_of: BatchLink | None = None,
) -> tuple[Report, str]:
    """Run a validated batch to its report. Returns the report and where it was written.

    Packed launches' manifests go to ``manifest_store`` (default: beside the report), under
    ``<batch-id>/manifests/``: the jobs' identity needs read access there and nowhere else.
    """
    manifests = manifest_store or store
    the_plan: Plan = plan(
        batch,
        catalog,
        mode=options.mode,
        manifest_root=manifests.url(batch.batch_id, "manifests"),
        results_root=store.url(batch.batch_id, results.FOLDER),
        results_volume=_results_volume(store, batch.batch_id, clients),
        max_running_tasks=options.max_running_tasks,
    )
    budget = Budget.for_project(options.rates, project=options.project, region=options.region)
    cloud = CloudRun(clients, options.project, options.region, budget)
    runner = BatchRunner(
        the_plan,
        cloud,
        store,
        manifest_store=manifests,
        concurrency=options.concurrency,
        poll=options.poll,
        progress=progress_sink.get(),
        deadline_seconds=options.deadline_seconds,
        rerun_of=rerun_of,
        retry=options.retry,
        stop=options.stop_rule(batch),
        on_result=result_sink.get(),
    )
    # Outside the try: a run refused the batch (another spec, another live controller) writes nothing.
    resumed = runner.open_batch(project=options.project, region=options.region, flow_run_id=flow_run_id)
    store = runner.store  # from here on, every write checks that this controller still holds the batch
    _running[batch.batch_id] = runner
    finished: Report | None = None
    launch_task_runs: dict[int, UUID] = {}
    try:
        # A batch that ran to its end starts nothing: its one-off jobs, and with them their executions, were
        # deleted, so looking executions up by launch key would not find them and would run items again.
        finished = standing_report(store, runner.plan.batch, len(runner.states)) if resumed else None
        if finished is not None:
            log.info("batch %s already ran to its end: its report stands and nothing is launched", batch.batch_id)
        elif use_prefect_tasks:
            adopted = prepare_task(batch.batch_id, options.service_account)
            launch_task_runs = _launch_in_tasks(runner)
        else:
            runner.prepare(service_account=options.service_account)
            adopted = runner.adopt_existing()
            runner.launch_all(watch=True)
        if resumed and finished is None:
            log.info("resumed batch %s: %s already running or done", batch.batch_id, plural(adopted, "execution"))
    except BaseException as exc:
        _stop(runner, store, exc, flow_run_id)  # then the report below
        raise
    finally:
        _running.pop(batch.batch_id, None)
        try:
            if finished is None:
                report, url = _finish(runner, clients, store, options, flow_run_id)
                # Here rather than after the return: an interrupted batch leaves its report too, and the caller
                # (the CLI) prints it even though the interruption propagates.
                if (sink := report_sink.get()) is not None:
                    sink(report, url)
                _end_launch_tasks(report, launch_task_runs)
        finally:
            runner.close()
    if finished is not None:
        for _ in runner.emitting(finished.items):  # the result stream's items, as the stored report has them
            pass
        if (sink := report_sink.get()) is not None:
            sink(finished, store.url(batch.batch_id, "report.json"))
        _delete_one_off_jobs(runner)  # a run killed after writing the report may have left them
        return finished, store.url(batch.batch_id, "report.json")
    return report, url


def _stop(runner: BatchRunner, store: Store, exc: BaseException, flow_run_id: str | None) -> None:
    """Ctrl-C, SIGTERM, a Prefect cancellation or a crash: store an interim report, then cancel what runs.
    A Prefect runner or worker SIGKILLs a cancelled flow run 30 s after its SIGTERM: the interim report
    first, then half of those 30 s for the executions, the rest for the report that replaces it."""
    runner.problems.append(runner.redact(f"the batch was interrupted: {interruption(exc)}"))
    runner.cancel_event.set()
    try:
        store_report(store, runner.interim_report(flow_run_id=flow_run_id))
    except Exception as error:  # LeaseLost too: the batch's files are another controller's now
        log.warning("interim report not written: %s", runner.redact(str(error)))
    runner.cancel(wait_seconds=15.0 if isinstance(exc, TerminationSignal) else CANCEL_SECONDS)


def interruption(exc: BaseException) -> str:
    """What stopped a batch, in words: a KeyboardInterrupt from Ctrl-C carries no text of its own."""
    if isinstance(exc, TerminationSignal):
        try:
            name = signal.Signals(exc.signal).name
        except ValueError:
            name = f"signal {exc.signal}"
        return f"{name} (a Prefect cancellation, or the flow-run process was stopped)"
    if isinstance(exc, KeyboardInterrupt):
        return str(exc) or "Ctrl-C (SIGINT)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _end_launch_tasks(report: Report, task_runs: Mapping[int, UUID]) -> None:
    """End Failed the task run of each launch whose items did not all succeed (Cancelled when they were all
    cancelled).

    A launch task only starts its execution; the items' outcomes are known after the watch, so the task's
    state is set afterwards, with the counts in its message.
    """
    if not task_runs:
        return
    failed: dict[int, Counter[str]] = {}
    for item in report.items:
        if item.state != ItemState.SUCCEEDED and item.launch is not None and item.launch in task_runs:
            failed.setdefault(item.launch, Counter())[str(item.state)] += 1
    if not failed:
        return
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            for index, counts in failed.items():
                message = "items did not succeed: " + ", ".join(f"{n:,} {state}" for state, n in counts.items())
                ended = Cancelled if set(counts) == {str(ItemState.CANCELLED)} else Failed
                client.set_task_run_state(task_runs[index], ended(message=message), force=True)
    except Exception as exc:  # the report is the record; the task states are a view of it
        log.warning("launch task runs of batch %s not marked failed: %s", report.batch_id, exc)


def _delete_one_off_jobs(runner: BatchRunner) -> None:
    if runner.plan.batch.keep_jobs:
        return
    for job in runner.plan.one_off_jobs:
        try:
            runner.cloud.delete_job(job.name)
        except Exception as exc:
            log.warning("one-off job %s not deleted: %s", job.name, exc)


def _unstored(
    runner: BatchRunner, items: Callable[[], Iterable[ItemResult]], flow_run_id: str | None, url: str, why: str
) -> ReportNotStored:
    """The error that says the report is not at ``url``, and why, once the report is written to a local
    folder instead (its problems say so), its items made again from what the runner holds (``items``); when
    no local folder takes it either, the error says that the summary printed is all that is left of it."""
    batch_id = runner.plan.batch.batch_id
    for folder in (Path.cwd() / UNSTORED_FOLDER, Path(tempfile.gettempdir()) / UNSTORED_FOLDER):
        elsewhere = LocalStore(folder)
        copy = elsewhere.url(batch_id)
        note = runner.redact(f"the report could not be stored at {url}: {why}; this copy was written to {copy}")
        try:
            stored, summary = runner.write_items(items(), elsewhere)
            report = runner.report(stored, summary=summary, flow_run_id=flow_run_id)
            kept = report.model_copy(update={"problems": [*report.problems, note]})
            elsewhere.write(batch_id, results.JSONL, results.jsonl_chunks(kept.items))
            kept, _, _ = store_report(elsewhere, kept)
            write_html(elsewhere, kept, None)
        except (StoreError, OSError) as exc:
            log.warning("the report could not be written to %s either: %s", folder, exc)
            continue
        return ReportNotStored(note, kept)
    note = f"the report could not be stored at {url} ({why}), nor in a local folder: the summary is all there is"
    return ReportNotStored(runner.redact(note), runner.report(list(items()), flow_run_id=flow_run_id))


def _store_unusable(runner: BatchRunner) -> str | None:
    """Why the batch's files cannot be written now (the lease ran out while the store could not be
    reached), else None. Raises LeaseLost when another controller took the batch over."""
    if runner.lease is None:
        return None
    try:
        runner.lease.check()
    except LeaseLost as exc:
        if exc.taken:
            raise
        return str(exc)
    return None


@gc_paused()  # the batch's per-item objects all live on until the report is written
def _finish(
    runner: BatchRunner, clients: Clients, store: Store, options: Options, flow_run_id: str | None
) -> tuple[Report, str]:
    """Collect, tail, build and store the report; each step degrades rather than losing the report. The items
    are made and written a shard at a time, so the report of a million items is never in memory at once.

    Raises ReportNotStored when the report cannot be stored where it belongs (then it is in a local folder
    the message names), LeaseLost when another controller took the batch over: this one writes none of its
    files."""
    unusable = _store_unusable(runner)
    tails = _tails(runner, clients, options)
    if unusable is not None:
        runner.problems.append("item results not read: the report store cannot be used")

    def made() -> Iterator[ItemResult]:  # again, from what the runner holds, when a copy goes elsewhere
        # The result stream's last items as they are made, also when the report cannot be stored.
        return runner.emitting(runner.finished_items(tails, read_results=unusable is None))

    url = store.url(runner.plan.batch.batch_id, REPORT_FILE)
    if unusable is not None:
        raise _unstored(runner, made, flow_run_id, url, unusable)
    report, url, generation = _store(runner, store, made, flow_run_id, url)
    try:
        write_html(store, report, generation)
    except Exception as exc:
        log.warning("report.html not written: %s", runner.redact(str(exc)))
    # Deleting a job deletes its executions: while a launch has not run to its end, the jobs stay, so running
    # the batch again finds what already ran by launch key and starts only the rest.
    if all(state.execution is not None and state.execution.done for state in runner.states):
        _delete_one_off_jobs(runner)
    elif runner.plan.one_off_jobs and not runner.plan.batch.keep_jobs:
        log.info("one-off jobs of batch %s kept until it is resumed to its end", report.batch_id)
    return report, url


def _store(
    runner: BatchRunner,
    store: Store,
    made: Callable[[], Iterable[ItemResult]],
    flow_run_id: str | None,
    url: str,
) -> tuple[Report, str, str | None]:
    """The report stored where it belongs: its item shards, results.jsonl (from the shards: before the report
    is built, so that a failure is one of its problems), report.json. Raises ReportNotStored when the store
    fails or the lease ran out meanwhile (the items ran: not the caller's mistake, and the summary is due)."""
    try:
        stored, summary = runner.write_items(made())
        unusable = _write_results(runner, store, stored)
        if unusable is None:
            report = runner.report(stored, summary=summary, flow_run_id=flow_run_id)
            return store_report(store, report)  # a resumed batch keeps the reruns listed
    except LeaseLost as exc:
        if exc.taken:
            raise
        unusable = str(exc)
    except StoreError as exc:
        unusable = str(exc)
    raise _unstored(runner, made, flow_run_id, url, unusable)


def _write_results(runner: BatchRunner, store: Store, items: Iterable[ItemResult]) -> str | None:
    """Write results.jsonl; a failure is one of the report's problems. Returns why the store cannot be used
    when the lease ran out meanwhile (LeaseLost propagates when the batch was taken over)."""
    try:
        store.write(runner.plan.batch.batch_id, results.JSONL, results.jsonl_chunks(items))
    except LeaseLost as exc:
        if exc.taken:
            raise
        return str(exc)
    except StoreError as exc:
        runner.problems.append(runner.redact(f"results.jsonl not written: {exc}"))
    return None


def _tails(runner: BatchRunner, clients: Clients, options: Options) -> dict[str, Tail]:
    """The task details read, then the log tails of the items that need them (none: ``logs_for`` none)."""
    try:
        runner.collect_tasks()
    except Exception as exc:
        runner.problems.append(runner.redact(f"task details unavailable: {type(exc).__name__}: {exc}"))
    if options.logs_for == "none":
        return {}
    try:
        return runner.log_tails(
            runner.iter_item_results(),
            clients.logging,
            all_items=options.logs_for == "all",
            max_lines=options.log_lines,
            log_resource=options.log_resource,
        )
    except Exception as exc:
        runner.problems.append(runner.redact(f"log tails unavailable: {type(exc).__name__}: {exc}"))
    return {}


def _stores(options: RunOptions, catalog: Catalog, clients: Clients) -> tuple[Store, Store | None]:
    """Where the report goes (a GcsBucket block, a gs:// prefix or a folder) and where manifests go."""
    if options.report_block:
        store: Store = open_bucket_block(options.report_block)
    else:
        report_to = options.report_to or catalog.report_to or "reports"
        store = open_store(report_to, clients.storage if report_to.startswith("gs://") else None)
    manifests_to = options.manifests_to or catalog.manifests_to
    if not manifests_to:
        return store, None
    return store, open_store(manifests_to, clients.storage if manifests_to.startswith("gs://") else None)


def _load_batch(source: str | dict[str, Any], options: RunOptions, catalog: Catalog, clients: Clients) -> Batch:
    """The validated batch: the one the CLI already validated in this process, else read and validated here."""
    if (ready := prepared_batch.get()) is not None:
        return ready
    spec_source: Any = source
    if isinstance(source, str) and source.startswith("gs://"):
        from controller.store import read_url

        spec_source = read_url(source, clients.storage, limit=MAX_SPEC_BYTES).decode("utf-8")
    return load_batch(spec_source, catalog, batch_id=options.batch_id)


def _summary(report: Report, url: str) -> dict[str, Any]:
    return {
        "batch_id": report.batch_id,
        "status": str(report.status),
        **({"stopped": report.stopped} if report.stopped else {}),
        "report": url,
        "total": report.summary.total,
        **{str(state): count for state, count in report.summary.by_state.items()},
    }


@contextmanager
def _target(options: RunOptions, catalog: Catalog) -> Iterator[str]:
    """The project to run in (controller.target), on the embedded emulator for the time of the run when there
    is neither a project nor an emulator, as ``fanout run`` does."""
    target = choose_target(
        options.project or catalog.project,
        catalog,
        region=options.region,
        report_to=options.report_to or catalog.report_to or "reports",
    )
    with serving(target) as embedded:
        if embedded:
            get_run_logger().info("no project: running on the embedded emulator at %s", embedded)
        yield target.project


def _name_flow_run(batch_id: str) -> None:
    """Name the current flow run after the batch, so the Prefect UI lists runs by batch id."""
    flow_run_id = current_flow_run.id
    if flow_run_id is None:
        return
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(UUID(flow_run_id), name=batch_id)
    except Exception as exc:
        log.warning("flow run not renamed to batch %s: %s", batch_id, exc)


class ReportNotStored(RuntimeError):
    """The batch ran but its report.json could not be written (a full disk, storage gone): ``report`` is what
    it would have held, for the caller to show."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:  # Prefect may pickle a state's data
        return (type(self), (str(self), self.report))


class ItemsFailed(RuntimeError):
    """What a Failed ``fan_out`` run raises when asked for its result: items did not succeed. ``summary`` is
    what the run would have returned (the report's counts and location)."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:  # Prefect may pickle a state's data
        return (type(self), (str(self), self.summary))


class BatchCancelled(RuntimeError):
    """What a Cancelled ``fan_out`` run raises when asked for its result: the batch was cancelled (a signal,
    a Prefect cancellation, its deadline), whatever ``fail_on_item_failure`` says, since its items did not
    all run. ``summary`` is what the run would have returned, with ``cancelled_by`` (by what) and
    ``interrupted`` (true for a signal) added; its report is written all the same."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary

    @property
    def interrupted(self) -> bool:
        return bool(self.summary.get("interrupted"))

    def __reduce__(self) -> tuple[Any, ...]:  # Prefect may pickle a state's data
        return (type(self), (str(self), self.summary))


def _final_state(
    report: Report, url: str, fail_on_item_failure: bool, cancelled_by: str | None = None, interrupted: bool = False
) -> dict[str, Any] | State[Any]:
    """The flow's return value: the summary; a Cancelled state when the batch was cancelled (``cancelled_by``
    says by what: a signal, a Prefect cancellation, its deadline; its data a ``BatchCancelled`` carrying the
    summary, with ``interrupted`` true for a signal); or a Failed state when an item did not succeed (its
    data an ``ItemsFailed``). The data of either is an exception because Prefect's ``State.result()`` raises
    a failed or cancelled state's data and refuses anything else with a TypeError, so a Python caller of
    ``fan_out`` gets one it can catch, with the summary on it. Both after the report is written and the
    artifacts published, and returned, not raised, so Prefect logs no traceback (nor "Crash detected!")."""
    summary = _summary(report, url)
    counts = ", ".join(f"{count:,} {state}" for state, count in report.summary.by_state.items() if count)
    stopped = f"; {report.stopped}" if report.stopped else ""
    outcome = (
        f"{report.summary.not_succeeded:,} of {plural(report.summary.total, 'item')} did not succeed ({counts})"
        f"{stopped}; report: {url}"
    )
    if report.status is BatchStatus.CANCELLED:
        message = f"batch {report.batch_id} cancelled by {cancelled_by or 'request'}: {outcome}"
        cancelled = {**summary, "cancelled_by": cancelled_by, "interrupted": interrupted}
        return Cancelled(message=message, data=BatchCancelled(message, cancelled))
    if not fail_on_item_failure or not report.summary.not_succeeded:
        return summary
    message = f"batch {report.batch_id}: {outcome}"
    return Failed(message=message, data=ItemsFailed(message, summary))


def _standing_state(report: Report, url: str, spec: Any, fail_on_item_failure: bool) -> State[Any]:
    """The state of a run that found its batch finished: nothing launched, and how to run it again."""
    notice = finished_notice(report, url, spec if isinstance(spec, str) else None)
    get_run_logger().info(notice)
    summary = _summary(report, url)
    if isinstance(_final_state(report, url, fail_on_item_failure), dict):
        return Completed(message=notice, data=summary)
    return Failed(message=notice, data=ItemsFailed(notice, summary))


def _fan_out(
    batch: str | dict[str, Any] | None = None,
    rerun_of: str | None = None,
    rerun_states: list[str] | None = None,
    **parameters: Any,
) -> dict[str, Any] | State[Any]:
    options = RunOptions.from_parameters(parameters)
    if batch is None and rerun_of is None:
        raise ValueError("give the batch spec (batch=...), or a report to rerun the failures of (rerun_of=...)")
    job_catalog = prepared_catalog.get() or Catalog.load(options.catalog)
    try:
        with _target(options, job_catalog) as project:
            rerun = None if rerun_of is None else (rerun_of, rerun_states)
            report, url, stopped_by = _run_batch(batch, options, job_catalog, project, rerun)
    except reruns.NothingToRerun as exc:
        get_run_logger().info("%s", exc)
        return Completed(message=str(exc), data={"batch_id": None, "rerun_of": rerun_of, "total": 0})
    if report.flow_run_id != current_flow_run.id:  # an earlier run's report stood: this run launched nothing
        return _standing_state(report, url, batch, options.fail_on_item_failure)
    if stopped_by is not None:
        cancelled_by = interruption(stopped_by)
    elif options.deadline_seconds is not None:
        cancelled_by = f"its deadline of {options.deadline_seconds:.0f}s"
    else:
        cancelled_by = None
    return _final_state(report, url, options.fail_on_item_failure, cancelled_by, stopped_by is not None)


def _batch_to_run(
    batch: str | dict[str, Any] | None,
    options: RunOptions,
    job_catalog: Catalog,
    clients: Clients,
    rerun: tuple[str, list[str] | None] | None,
) -> tuple[Batch, RunOptions, reruns.StartedRerun | None]:
    """The batch to run, the options to run it with and, for a rerun, the rerun as listed: a rerun's report
    goes beside its parent's unless the options say where, and is listed in the parent's report here."""
    spec = None if batch is None else _load_batch(batch, options, job_catalog, clients)
    if rerun is None:
        assert spec is not None
        return spec, options, None
    report, states = rerun
    todo = reruns.plan_rerun(
        report,
        states=states,
        spec=spec,
        spec_name=batch if isinstance(batch, str) else "(the spec given)",
        storage_client=clients.storage if report.startswith("gs://") else None,
    )
    if not (options.report_to or options.report_block):
        options = options.model_copy(update={"report_to": todo.parent.root})
    store, _ = _stores(options, job_catalog, clients)
    started = todo.start(job_catalog, store, options.batch_id)
    return started.batch, options, started


def _run_batch(
    batch: str | dict[str, Any] | None,
    options: RunOptions,
    job_catalog: Catalog,
    project: str,
    rerun: tuple[str, list[str] | None] | None = None,
) -> tuple[Report, str, BaseException | None]:
    """The batch run to its report; the report, where it is, and the signal that interrupted it, if one did
    (its report is written all the same, and the flow run ends Cancelled rather than Crashed)."""
    logger = get_run_logger()
    credentials = load_credentials(options.gcp_credentials_block)
    clients = Clients(project=project, endpoints=Endpoints.from_env(), credentials=credentials)
    the_batch, options, started = _batch_to_run(batch, options, job_catalog, clients, rerun)
    store, manifest_store = _stores(options, job_catalog, clients)
    with reruns.withdrawn_unless_opened(started, store):
        _name_flow_run(the_batch.batch_id)
        runtime = Options.resolve(options, job_catalog, project=project, report_to=store.url("").rstrip("/"))
        logger.info(
            "batch %s: %s -> %s",
            the_batch.batch_id,
            plural(len(the_batch.items), "item"),
            store.url(the_batch.batch_id),
        )
        from controller.artifacts import ProgressArtifact, publish_artifacts

        artifact = ProgressArtifact(the_batch.batch_id, len(the_batch.items))
        outer = progress_sink.get()

        def progress(counts: Mapping[str, int]) -> None:
            artifact.record(counts)
            if outer is not None:
                outer(counts)

        stored: dict[str, Any] = {}
        outer_sink = report_sink.get()

        def keep(report: Report, url: str) -> None:
            stored["report"], stored["url"] = report, url
            if outer_sink is not None:
                outer_sink(report, url)

        tokens = [(progress_sink, progress_sink.set(progress)), (report_sink, report_sink.set(keep))]
        stopped_by: BaseException | None = None
        try:
            report, url = execute(
                the_batch,
                job_catalog,
                runtime,
                clients=clients,
                store=store,
                manifest_store=manifest_store,
                flow_run_id=current_flow_run.id,
                rerun_of=None if started is None else started.link,
            )
        except (KeyboardInterrupt, TerminationSignal) as exc:
            if "report" not in stored:  # interrupted before the report was stored: nothing to end the run on
                raise
            report, url, stopped_by = stored["report"], stored["url"], exc
        finally:
            for var, token in tokens:
                var.reset(token)  # type: ignore[attr-defined]
        artifact.finish(report.summary.total)
        publish_artifacts(report, report_url=url)
        logger.info("batch %s %s: %s", report.batch_id, report.status, url)
        return report, url, stopped_by


# The flow's parameters are the batch and every flow option of RunOptions, with their defaults and the
# descriptions the Prefect UI shows: Prefect reads both from the function's signature and docstring.
_fan_out.__signature__ = flow_signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            "batch", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=str | dict[str, Any] | None
        ),
        inspect.Parameter("rerun_of", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None),
        inspect.Parameter("rerun_states", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=list[str] | None),
    ],
    dict[str, Any],
)
_fan_out.__doc__ = flow_docstring(
    "Run a batch spec (a path, a gs:// URL, inline YAML/JSON, or a dict) on Cloud Run jobs.\n\n"
    "Returns the report's summary and location.",
    {
        "batch": "The batch spec: a file path (relative to the working directory), a gs:// URL, or the spec "
        "itself as YAML/JSON text or an object. With rerun_of, optional: the spec the rerun batch ran, "
        "needed only when the items to rerun have literal secrets (which are never stored).",
        "rerun_of": "Rerun items of this finished batch instead: its report.json, the report's folder or a gs:// "
        "URL. The new batch (id <batch>-rerun-<n>) is written beside it unless report_to says otherwise, and "
        "the two reports link to each other.",
        "rerun_states": "With rerun_of: the states of the items to rerun (succeeded, failed, timed_out, "
        "cancelled, not_launched); default: every state but succeeded.",
    },
)
fan_out: Flow[..., dict[str, Any] | State[Any]] = flow(
    name="fan-out",
    description="Fan out a batch of containerized commands as Cloud Run job executions and report on each.",
    # Threads for launch tasks; the batch's own concurrency option bounds how many call Cloud Run at once.
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_LAUNCH_THREADS),  # type: ignore[arg-type]
    log_prints=False,
)(_fan_out)


def with_result_block(block_name: str) -> Flow[..., dict[str, Any] | State[Any]]:
    """``fan_out`` with its return value persisted as JSON to a saved prefect-gcp ``GcsBucket`` block.

    For Python callers; a deployment sets ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` instead (prefect.yaml).
    The block is named, not loaded, so Prefect resolves it when the flow run starts, not at import.
    """
    return fan_out.with_options(
        result_storage=f"gcs-bucket/{block_name}", persist_result=True, result_serializer="json"
    )


def rerun(
    report: str,
    states: str | Iterable[str] | None = None,
    *,
    spec: str | dict[str, Any] | None = None,
    **parameters: Any,
) -> Any:
    """Rerun a finished batch's items in ``states`` (default: every state but succeeded) as a new batch,
    through the ``fan_out`` flow: a flow run of its own. ``report`` is a report.json, its folder or a gs://
    URL; ``spec`` the batch's spec, needed only for items with literal secrets; ``parameters`` are
    ``fan_out``'s (``report_to`` defaults to the parent's report location). Returns what ``fan_out`` does: the
    summary, or it raises ``ItemsFailed`` when rerun items fail again (unless ``fail_on_item_failure=False``)
    and ``BatchCancelled`` when the rerun is cancelled."""
    listed = None if states is None else [str(s) for s in (states.split(",") if isinstance(states, str) else states)]
    return fan_out(batch=spec, rerun_of=report, rerun_states=listed, **parameters)


__all__ = [
    "BatchCancelled",
    "ItemsFailed",
    "LaunchState",
    "Options",
    "ReportNotStored",
    "execute",
    "fan_out",
    "progress_sink",
    "report_sink",
    "rerun",
    "result_sink",
    "with_result_block",
]
