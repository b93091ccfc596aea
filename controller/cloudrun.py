"""Launch, watch and cancel executions on the Cloud Run Admin API v2, through google-cloud-run.

Every API call goes through ``CloudRun._call``, which charges the quota budget and applies the retry
policy (tests check that no call skips it). API messages become the immutable ``ExecutionStatus`` and
``TaskStatus`` here, in one place.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf import duration_pb2
from tenacity import RetryCallState

from controller.clients import Clients
from controller.durations import to_api_duration
from controller.plan import ENV_LAUNCH_KEY, RESULTS_MOUNT_PATH, RESULTS_VOLUME, Launch, OneOffJob
from controller.quota import Budget, Limiter
from controller.report import ItemState
from controller.retry import api_error_message, is_ambiguous, is_retryable, retrying

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_SIZE = 1000
# Clock skew allowance when matching executions to a batch by their create time.
SKEW = timedelta(minutes=5)
# gRPC code Cloud Run reports in a task attempt's status when the task ran past its timeout.
DEADLINE_EXCEEDED = 4
# How long an execution may take to appear in ListExecutions after RunJob created it: after an ambiguous
# RunJob error, the launch key is looked for over this many seconds before RunJob may be sent again.
LIST_LAG_SECONDS = 5.0
# After a lost RunJob answer the launch's execution, if there is one, is among the job's newest: a look-up
# reads this many first, and stops at an execution whose RunJob was answered before the launch was sent.
LOOKUP_FIRST_PAGE = 20
ANSWERS_KEPT = 256  # the RunJob answers last received, of every job: where those stops are found

# Response field masks (the x-goog-fieldmask header, gRPC metadata or REST header): only what
# ExecutionStatus.from_message and TaskStatus.from_message read, so large ListTasks answers cost less to
# send and to parse. tests/emulator/test_controller_masks.py fails if a mapper reads a field these drop.
_CONDITION = "conditions(type,state,message,executionReason)"
EXECUTION_FIELDS = (
    "name,job,taskCount,runningCount,succeededCount,failedCount,cancelledCount,retriedCount,createTime,"
    f"startTime,completionTime,{_CONDITION},logUri,template.containers.env(name,value)"
)
TASK_FIELDS = f"index,{_CONDITION},lastAttemptResult,retried,startTime,completionTime"
# What a look-up for launch keys reads of each execution it lists: the whole job is read, several times
# after each lost RunJob answer, so it parses no more than the key, the name and the creation time.
LOOKUP_FIELDS = "name,createTime,template.containers.env(name,value)"
FIELD_MASK_HEADER = "x-goog-fieldmask"


class ExecutionOutcome(StrEnum):
    """How an execution ended, from its ``Completed`` condition."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class LaunchUnverified(Exception):
    """RunJob's answer was lost and no look-up could tell whether Cloud Run started the execution: sending it
    again might run the launch twice, so it is not sent again."""


@dataclass(frozen=True, slots=True)
class ExecutionStatus:
    """What the controller needs to know about one execution."""

    name: str
    job: str
    key: str | None  # the FANOUT_LAUNCH_KEY it was started with, if any
    task_count: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    retried: int
    create_time: datetime | None
    start_time: datetime | None
    completion_time: datetime | None
    outcome: ExecutionOutcome | None  # None until the execution has ended
    message: str | None
    log_uri: str | None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def finished_tasks(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @classmethod
    def from_message(cls, execution: run_v2.Execution) -> ExecutionStatus:
        return cls.from_pb(run_v2.Execution.pb(execution))

    @classmethod
    def from_pb(cls, pb: Any) -> ExecutionStatus:
        """From the raw protobuf Execution (``run_v2.Execution.pb``): proto-plus converts on every field read."""
        completed = next((c for c in pb.conditions if c.type_ == "Completed"), None)
        outcome: ExecutionOutcome | None = None
        message = completed.message if completed is not None else None
        completion_time = _stamp(pb, "completion_time")
        if completion_time is not None:
            reason = completed.execution_reason if completed is not None else None
            if reason == run_v2.Condition.ExecutionReason.CANCELLED or (pb.cancelled_count and not pb.failed_count):
                outcome = ExecutionOutcome.CANCELLED
            elif completed is not None and completed.state == run_v2.Condition.State.CONDITION_SUCCEEDED:
                outcome = ExecutionOutcome.SUCCEEDED
            else:
                outcome = ExecutionOutcome.FAILED
        return cls(
            name=pb.name,
            job=pb.job,
            key=_launch_key(pb),
            task_count=pb.task_count,
            running=pb.running_count,
            succeeded=pb.succeeded_count,
            failed=pb.failed_count,
            cancelled=pb.cancelled_count,
            retried=pb.retried_count,
            create_time=_stamp(pb, "create_time"),
            start_time=_stamp(pb, "start_time"),
            completion_time=completion_time,
            outcome=outcome,
            message=message or None,
            log_uri=pb.log_uri or None,
        )


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """One task of an execution, mapped from the v2 ``Task``: its ``Completed`` condition says whether and how
    it ended; ``last_attempt_result`` says how its last attempt ended (``status`` OK means it succeeded; else
    ``exit_code`` or ``term_signal``, at most one of them, or neither when the container never ran)."""

    index: int
    state: ItemState | None  # None while pending or running
    exit_code: int | None  # only when the container exited with a code
    attempts: int
    start_time: datetime | None
    completion_time: datetime | None
    message: str | None  # why it did not succeed, as Cloud Run says it

    @classmethod
    def from_message(cls, task: run_v2.Task) -> TaskStatus:
        # Read from the raw protobuf: proto-plus converts on every field read, which was about 40 % of the
        # controller's CPU for reading a 10,000-task execution.
        pb = run_v2.Task.pb(task)
        completed = next((c for c in pb.conditions if c.type_ == "Completed"), None)
        result = pb.last_attempt_result if pb.HasField("last_attempt_result") else None
        start_time, completion_time = _stamp(pb, "start_time"), _stamp(pb, "completion_time")
        state = _task_state(completion_time is not None, completed, result)
        started = start_time is not None or result is not None
        return cls(
            index=pb.index,
            state=state,
            exit_code=_exit_code(state, result),
            attempts=pb.retried + 1 if started else 0,
            start_time=start_time,
            completion_time=completion_time,
            # Only a task that did not succeed has a message worth keeping (a 10,000-task execution would hold
            # 10,000 copies of "completed successfully").
            message=None if state is ItemState.SUCCEEDED else _task_message(completed, result),
        )


# The raw protobuf messages (``run_v2.Task.pb``) of a task's Condition and TaskAttemptResult.
_PbCondition = Any
_PbResult = Any


def _task_state(completion_time: bool, completed: _PbCondition | None, result: _PbResult | None) -> ItemState | None:
    conditions = run_v2.Condition.State
    ended = completed is not None and completed.state in (conditions.CONDITION_SUCCEEDED, conditions.CONDITION_FAILED)
    if not (completion_time or ended):
        return None
    if completed is not None and completed.state == conditions.CONDITION_SUCCEEDED:
        return ItemState.SUCCEEDED
    if completed is not None and completed.execution_reason == run_v2.Condition.ExecutionReason.CANCELLED:
        return ItemState.CANCELLED
    if result is not None and result.HasField("status") and result.status.code == DEADLINE_EXCEEDED:
        return ItemState.TIMED_OUT
    return ItemState.FAILED


def _exit_code(state: ItemState | None, result: _PbResult | None) -> int | None:
    """The container's exit code, when it exited with one. ``exit_code`` is a plain int32 on the wire, so an
    unset one reads 0: a failed attempt "exited with 0" only if its status says nothing else went wrong. A
    task that never started (image or secret missing, command not found) or was killed has no exit code."""
    if result is None or state not in (ItemState.SUCCEEDED, ItemState.FAILED):
        return None
    if state is ItemState.SUCCEEDED or result.exit_code != 0:
        return int(result.exit_code)
    return None


def _task_message(completed: _PbCondition | None, result: _PbResult | None) -> str | None:
    parts = []
    if result is not None and result.HasField("status") and result.status.message:
        parts.append(result.status.message)
    if result is not None and result.term_signal:
        parts.append(f"terminated by signal {result.term_signal}")
    if not parts and completed is not None and completed.message:
        parts.append(completed.message)
    return "; ".join(parts) or None


def _launch_key(execution: Any) -> str | None:
    """The FANOUT_LAUNCH_KEY a raw protobuf Execution was started with, if any."""
    key = None
    for container in execution.template.containers:
        for env in container.env:
            if env.name == ENV_LAUNCH_KEY:
                key = env.value
    return key


def _stamp(message: Any, name: str) -> datetime | None:
    """A raw protobuf Timestamp field as a plain UTC datetime (microseconds), None when unset or epoch 0."""
    if not message.HasField(name):
        return None
    stamp = getattr(message, name)
    if not (stamp.seconds or stamp.nanos):
        return None
    return datetime.fromtimestamp(stamp.seconds, UTC).replace(microsecond=stamp.nanos // 1000)


def _secret_env(refs: Iterable[tuple[str, str, str]]) -> list[run_v2.EnvVar]:
    """Env vars Cloud Run fills from Secret Manager: (name, secret, version) -> EnvVar with a secret ref."""
    return [
        run_v2.EnvVar(
            name=name,
            value_source=run_v2.EnvVarSource(secret_key_ref=run_v2.SecretKeySelector(secret=secret, version=version)),
        )
        for name, secret, version in refs
    ]


def short_name(resource: str) -> str:
    return resource.rsplit("/", 1)[-1]


class CloudRun:
    """The controller's view of one project and region of Cloud Run."""

    def __init__(
        self,
        clients: Clients,
        project: str,
        region: str,
        budget: Budget,
        *,
        attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str, BaseException], None] | None = None,
        list_lag_seconds: float = LIST_LAG_SECONDS,
        field_masks: bool = True,
    ) -> None:
        self.clients = clients
        self.field_masks = field_masks
        self.project = project
        self.region = region
        self.budget = budget
        self._attempts = attempts
        self._sleep = sleep
        self._on_retry = on_retry
        self.list_lag_seconds = list_lag_seconds
        self.parent = f"projects/{project}/locations/{region}"
        # (monotonic time RunJob answered, job, execution), oldest first: where verify_launch's looks stop.
        self._answered: deque[tuple[float, str, str]] = deque(maxlen=ANSWERS_KEPT)
        self._answered_lock = threading.Lock()

    def job_path(self, job: str) -> str:
        return f"{self.parent}/jobs/{job}"

    # -- the one gate every call passes ------------------------------------------------------------------

    def _call(
        self, limiter: Limiter, what: str, fn: Callable[[], T], *, ambiguous: Callable[[], T | None] | None = None
    ) -> T:
        """Run one API call under the quota budget and the retry policy.

        ``ambiguous`` is consulted after an error that may hide a success (a dropped response to a write):
        if it finds the effect, that is the result and the call is not repeated.
        """

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None:
                log.debug("retrying %s after %s: %s", what, type(exc).__name__, exc)
                if self._on_retry:
                    self._on_retry(what, exc)

        for attempt in retrying(attempts=self._attempts, sleep=self._sleep, before_sleep=before_sleep):
            with attempt:
                limiter.acquire()
                try:
                    return fn()
                except Exception as exc:
                    if ambiguous is not None and is_ambiguous(exc):
                        found = ambiguous()
                        if found is not None:
                            log.info("%s: the server acted although the call failed; adopting the result", what)
                            return found
                    raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    # -- jobs ---------------------------------------------------------------------------------------------

    def ensure_job(self, job: OneOffJob, *, service_account: str | None = None) -> None:
        """Create a one-off job unless it exists already (a previous attempt or a resumed batch made it)."""
        container = run_v2.Container(
            image=job.image,
            command=list(job.command),
            resources=run_v2.ResourceRequirements(limits={"cpu": job.cpu, "memory": job.memory}),
            env=_secret_env(job.secret_env),
        )
        volumes = []
        if job.results is not None:  # the image has no runner: its tasks write results into this mount
            # implicit-dirs: Cloud Storage FUSE then shows the items' folders, which exist as object names only;
            # enable-hns=false: no layout probe listing the whole bucket, which the jobs may not (terraform/).
            options = [f"only-dir={job.results.folder}", "implicit-dirs", "enable-hns=false"]
            gcs = run_v2.GCSVolumeSource(bucket=job.results.bucket, read_only=False, mount_options=options)
            volumes.append(run_v2.Volume(name=RESULTS_VOLUME, gcs=gcs))
            container.volume_mounts = [run_v2.VolumeMount(name=RESULTS_VOLUME, mount_path=RESULTS_MOUNT_PATH)]
        template = run_v2.TaskTemplate(containers=[container], volumes=volumes, max_retries=job.max_retries)
        if service_account:
            template.service_account = service_account
        request = run_v2.CreateJobRequest(
            parent=self.parent,
            job_id=job.name,
            job=run_v2.Job(
                labels={"managed-by": "fanout"},
                template=run_v2.ExecutionTemplate(template=template, parallelism=job.parallelism),
            ),
        )

        def create() -> bool:
            try:
                operation = self.clients.jobs.create_job(request=request, retry=None)
            # Over REST an error's class follows its HTTP status: ALREADY_EXISTS arrives as a 409 Conflict,
            # not as the AlreadyExists subclass the gRPC transport would raise.
            except gexc.Conflict:
                return True
            operation.result(timeout=300)
            return True

        self._call(self.budget.write, f"create job {job.name}", create, ambiguous=lambda: self._job_exists(job.name))

    def _job_exists(self, name: str) -> bool | None:
        try:
            self.clients.jobs.get_job(name=self.job_path(name), retry=None)
        except gexc.NotFound:
            return None
        return True

    def delete_job(self, name: str) -> None:
        def delete() -> None:
            try:
                self.clients.jobs.delete_job(name=self.job_path(name), retry=None)
            except gexc.NotFound:
                return

        self._call(self.budget.write, f"delete job {name}", delete)

    # -- executions ---------------------------------------------------------------------------------------

    def run(
        self, launch: Launch, *, since: datetime, guard: Callable[[], None] | None = None
    ) -> ExecutionStatus:
        """Start the launch's execution, exactly once.

        After an ambiguous failure the job's recent executions are searched for the launch's key before
        the run is repeated, so a dropped response never leads to a second execution. ``guard`` is called
        right before each RunJob is sent (after the rate limiter and after each retry's wait); what it
        raises ends the call unsent: the batch's lease (``Lease.check``) may have been lost while waiting.
        """
        override = run_v2.RunJobRequest.Overrides.ContainerOverride(
            args=list(launch.args or ()),
            clear_args=launch.clear_args,
            env=[
                *(run_v2.EnvVar(name=name, value=value) for name, value in (*launch.env, *launch.sensitive_env)),
                *_secret_env(launch.secret_env),
            ],
        )
        overrides = run_v2.RunJobRequest.Overrides(container_overrides=[override], task_count=launch.task_count)
        if launch.timeout_seconds is not None:
            overrides.timeout = duration_pb2.Duration(seconds=int(launch.timeout_seconds))
        request = run_v2.RunJobRequest(name=self.job_path(launch.job), overrides=overrides)

        sent_at = time.monotonic()

        def start() -> ExecutionStatus:
            if guard is not None:
                guard()
            operation = self.clients.jobs.run_job(request=request, retry=None)
            metadata = operation.metadata
            if metadata is None or not metadata.name:
                raise gexc.InternalServerError("RunJob answered without the execution in its metadata")
            with self._answered_lock:
                self._answered.append((time.monotonic(), launch.job, metadata.name))
            return ExecutionStatus.from_message(metadata)

        def look() -> ExecutionStatus | None:
            return self.verify_launch(launch, since=since, sent_at=sent_at)

        return self._call(self.budget.run, f"run {launch.job} ({launch.key})", start, ambiguous=look)

    def verify_launch(self, launch: Launch, *, since: datetime, sent_at: float = -math.inf) -> ExecutionStatus | None:
        """After an ambiguous RunJob error: the execution carrying the launch's key, or None when a list read
        ``list_lag_seconds`` after the error still does not show it (RunJob did not act: it may be sent again).

        Raises LaunchUnverified when no list could be read (each look has the full retry policy): a failed
        look-up never leads to a second RunJob.

        ``sent_at`` (monotonic) is when the launch's first RunJob was sent. An execution whose RunJob was
        answered before then was created before any this launch made, so a look stops there (the list is
        newest first): it reads the executions started since, not every one of the batch. A previous
        controller's executions were adopted before any launch (``BatchRunner.adopt_existing``).
        """
        with self._answered_lock:
            older = {name for answered, job, name in self._answered if job == launch.job and answered < sent_at}
        waited, delay = 0.0, 0.5
        while True:
            problem = ""
            try:
                found = self.find_launched(launch.job, {launch.key}, since=since, older=older).get(launch.key)
            except Exception as exc:
                if not (isinstance(exc, gexc.GoogleAPICallError) or is_retryable(exc)):
                    raise
                problem, found = f"{type(exc).__name__}: {api_error_message(exc)}", None
            if found is not None:
                return found
            # A list that failed had the whole retry policy already: looking again would wait that out again.
            if problem or waited >= self.list_lag_seconds:
                break
            self._sleep(delay)
            waited += delay
            delay = min(delay * 2, max(0.5, self.list_lag_seconds - waited))
        # Absent from a list read after the window: RunJob did not act. A list that failed then proves nothing.
        if not problem:
            return None
        raise LaunchUnverified(
            f"RunJob's answer was lost and the job's executions could not be listed to check whether it started "
            f"({problem}); not sent again, so that it cannot run twice"
        )

    def list_executions(self, job: str, *, since: datetime | None = None) -> Iterator[ExecutionStatus]:
        """The job's executions, newest first, stopping at the first one created before ``since``."""
        for pb in self._executions(job, EXECUTION_FIELDS):
            status = ExecutionStatus.from_pb(pb)
            if since is not None and status.create_time is not None and status.create_time < since - SKEW:
                return
            yield status

    def find_launched(
        self, job: str, keys: set[str], *, since: datetime, older: Collection[str] = ()
    ) -> dict[str, ExecutionStatus]:
        """Executions of ``job`` created since ``since`` that carry one of ``keys``, looked for down to the
        first of ``older`` (executions known to be older than any that carries them), if any.

        The job's executions are listed with ``LOOKUP_FIELDS`` only; the few that carry a key are then read
        in full (``poll``)."""
        names: dict[str, str] = {}
        first_page = LOOKUP_FIRST_PAGE if older else PAGE_SIZE
        try:
            for execution in self._executions(job, LOOKUP_FIELDS, first_page=first_page):
                created = _stamp(execution, "create_time")
                if (created is not None and created < since - SKEW) or execution.name in older:
                    break
                key = _launch_key(execution)
                if key in keys and key not in names:
                    names[key] = execution.name
                    if len(names) == len(keys):
                        break
            statuses = self.poll({job: set(names.values())}, since=since) if names else {}
        except gexc.NotFound:  # no such job, or an execution deleted since it was listed
            return {}
        return {key: statuses[name] for key, name in names.items()}

    def _executions(self, job: str, fields: str, *, first_page: int = PAGE_SIZE) -> Iterator[Any]:
        """The job's executions as raw protobuf messages, newest first; each page charged and retried."""
        token, size = "", first_page
        while True:
            request = run_v2.ListExecutionsRequest(parent=self.job_path(job), page_size=size, page_token=token)
            page = self._call(self.budget.read, f"list executions of {job}", self._lister(request, fields))
            yield from (run_v2.Execution.pb(message) for message in page.executions)
            token, size = page.next_page_token, PAGE_SIZE
            if not token:
                return

    def _lister(
        self, request: run_v2.ListExecutionsRequest | run_v2.ListTasksRequest, fields: str = EXECUTION_FIELDS
    ) -> Callable[[], Any]:
        """One page of a list call. Only the first page of a pager is read: later pages are requested by
        the caller, each through ``_call``, so every page is charged and retried."""
        if isinstance(request, run_v2.ListTasksRequest):
            tasks = self._mask(f"tasks({TASK_FIELDS}),nextPageToken")
            return lambda: self.clients.tasks.list_tasks(request=request, retry=None, metadata=tasks)
        executions = self._mask(f"executions({fields}),nextPageToken")
        return lambda: self.clients.executions.list_executions(request=request, retry=None, metadata=executions)

    def _mask(self, fields: str) -> tuple[tuple[str, str], ...]:
        return ((FIELD_MASK_HEADER, fields),) if self.field_masks else ()

    def get_execution(self, name: str) -> ExecutionStatus:
        message = self._call(
            self.budget.read,
            f"get {short_name(name)}",
            lambda: self.clients.executions.get_execution(name=name, retry=None, metadata=self._mask(EXECUTION_FIELDS)),
        )
        return ExecutionStatus.from_message(message)

    def poll(self, names_by_job: dict[str, set[str]], *, since: datetime) -> dict[str, ExecutionStatus]:
        """Current status of the given executions, with as few calls as possible: a Get each for a job
        with few of them, else one paged List of the job (which returns many executions per call)."""
        statuses: dict[str, ExecutionStatus] = {}
        for job, names in names_by_job.items():
            if len(names) <= 2:
                for name in names:
                    statuses[name] = self.get_execution(name)
                continue
            remaining = set(names)
            for status in self.list_executions(job, since=since):
                if status.name in remaining:
                    statuses[status.name] = status
                    remaining.discard(status.name)
                    if not remaining:
                        break
            for name in remaining:  # older than the page window or deleted: ask directly
                statuses[name] = self.get_execution(name)
        return statuses

    def list_tasks(self, execution: str) -> list[TaskStatus]:
        tasks: list[TaskStatus] = []
        token = ""
        while True:
            request = run_v2.ListTasksRequest(parent=execution, page_size=PAGE_SIZE, page_token=token)
            page = self._call(self.budget.read, f"list tasks of {short_name(execution)}", self._lister(request))
            tasks.extend(TaskStatus.from_message(task) for task in page.tasks)
            token = page.next_page_token
            if not token:
                return sorted(tasks, key=lambda task: task.index)

    def cancel(self, execution: str) -> None:
        """Ask Cloud Run to cancel an execution; an execution that already ended is not an error."""

        def cancel() -> None:
            try:
                self.clients.executions.cancel_execution(name=execution, retry=None)
            except (gexc.FailedPrecondition, gexc.NotFound):
                return
            except gexc.BadRequest:
                # Over REST a FAILED_PRECONDITION ("already finished") arrives as a plain 400: it is only
                # harmless if the execution has indeed ended.
                if self.clients.executions.get_execution(name=execution, retry=None).completion_time:
                    return
                raise

        self._call(self.budget.write, f"cancel {short_name(execution)}", cancel)

    def cancel_all(self, executions: Sequence[str], *, concurrency: int) -> dict[str, Exception]:
        """Cancel each execution, ``concurrency`` calls at a time (after a SIGTERM the whole batch has the
        seconds before the SIGKILL, and each call may first wait on the shared quota); what failed, by name."""

        def cancel(execution: str) -> Exception | None:
            try:
                self.cancel(execution)
            except Exception as exc:
                return exc
            return None

        if not executions:
            return {}
        with ThreadPoolExecutor(min(len(executions), max(1, concurrency)), thread_name_prefix="cancel") as pool:
            errors = list(pool.map(cancel, executions))
        return {name: exc for name, exc in zip(executions, errors, strict=True) if exc is not None}


def overrides_summary(launch: Launch) -> dict[str, Any]:
    """The RunJob overrides of a launch as plain data, for ``fanout plan`` (sensitive values masked)."""
    env = dict(launch.env)
    env.update({name: "***" for name, _ in launch.sensitive_env})
    env.update({name: f"<secret {secret}:{version}>" for name, secret, version in launch.secret_env})
    summary: dict[str, Any] = {"taskCount": launch.task_count, "env": env}
    if launch.args is not None:
        summary["args"] = list(launch.args)
    if launch.clear_args:
        summary["clearArgs"] = True
    if launch.timeout_seconds is not None:
        summary["timeout"] = to_api_duration(launch.timeout_seconds)
    return summary
