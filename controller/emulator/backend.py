"""Jobs, executions, tasks and operations of the emulated Cloud Run Admin API v2, and the task scheduler.

All state lives on the emulator's event loop and is only touched from it, so there are no locks. Resources
are plain records rendered to the v2 JSON shape on demand (field names and enum values are those of the
``google.cloud.run_v2`` message types; the tests parse every rendering with them, unknown fields rejected).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import hashlib
import itertools
import logging
import os
import random
import string
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.cloud import run_v2
from google.protobuf import json_format

from controller import limits
from controller.catalog import Catalog, JobDefinition
from controller.durations import parse_duration, to_api_duration
from controller.emulator.errors import RPC_CODE, ApiError, invalid, not_found
from controller.emulator.faults import FaultInjector
from controller.emulator.logstore import LogStore
from controller.emulator.processes import DockerProbe, Outcome, ProcessGroups
from controller.emulator.timefmt import rfc3339

log = logging.getLogger("controller.emulator")

DEFAULT_MAX_RUNNING_TASKS = 64
MAX_LIST_PAGE_SIZE = 1000  # Cloud Run documents no maximum for jobs/executions/tasks.list; we cap here.
DEFAULT_LIST_PAGE_SIZE = 100
OPERATIONS_MAX_PAGE_SIZE = 100  # operations.list: "Requested page size cannot exceed 100."
MAX_WAIT_SECONDS = 60.0
DEFAULT_TASK_TIMEOUT = "600s"
DEFAULT_MAX_RETRIES = 3

# Messages Cloud Run itself writes for failed tasks (seen in `gcloud run jobs executions describe` output).
MSG_NONZERO = "The container exited with an error."
MSG_TIMEOUT = "The configured timeout was reached."
MSG_CANCELLED = "The task was cancelled."
HOST_ENV_KEEP = ("PATH", "HOME", "LANG", "TMPDIR", "STORAGE_EMULATOR_HOST")
EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
JOB_TYPE = "type.googleapis.com/google.cloud.run.v2.Job"


def _now() -> float:
    return time.time()


def _etag(uid: str, version: int) -> str:
    return '"' + hashlib.sha1(f"{uid}:{version}".encode(), usedforsecurity=False).hexdigest()[:20] + '"'


def _suffix(rng: random.Random, length: int = 5) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(length))


@dataclass(eq=False)
class JobRec:
    name: str
    project: str
    location: str
    job_id: str
    uid: str
    spec: dict[str, Any]
    create_time: float
    seq: int
    update_time: float = 0.0
    generation: int = 1
    executions: list[ExecutionRec] = field(default_factory=list)
    execution_count: int = 0


@dataclass(eq=False)
class TaskRec:
    index: int
    name: str
    uid: str
    state: str = "PENDING"  # PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED
    attempt: int = 0
    retried: int = 0
    start_time: float | None = None
    scheduled_time: float | None = None
    completion_time: float | None = None
    exit_code: int | None = None
    status_code: str = "OK"
    status_message: str = ""
    pid: int | None = None
    version: int = 1


@dataclass(eq=False)
class ExecutionRec:
    name: str
    exec_id: str
    job: JobRec
    uid: str
    seq: int
    create_time: float
    task_count: int
    parallelism: int
    template: dict[str, Any]
    labels: dict[str, str]
    annotations: dict[str, str]
    tasks: list[TaskRec] = field(default_factory=list)
    state: str = "PENDING"  # PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED
    start_time: float | None = None
    completion_time: float | None = None
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    cancelling: bool = False
    first_failure: str = ""
    first_failure_timeout: bool = False
    version: int = 1
    driver: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass(eq=False)
class OperationRec:
    """An operation: either follows a live execution, or was done at once with a fixed response."""

    name: str
    seq: int
    execution: ExecutionRec | None = None
    response: dict[str, Any] | None = None
    type_url: str = JOB_TYPE


@dataclass
class Counters:
    tasks_started: int = 0
    attempts_started: int = 0
    peak_running: int = 0
    executions_started: int = 0


class Backend:
    """The emulated service: resources, operations, the scheduler, and the task log store."""

    def __init__(
        self,
        *,
        project: str,
        region: str,
        catalog: Catalog | None,
        local_images: Mapping[str, list[str]] | None,
        secrets: Mapping[str, str] | None,
        max_running_tasks: int | None,
        use_docker: bool,
        faults: FaultInjector,
        logs: LogStore,
        kill_grace_seconds: float,
    ) -> None:
        self.project = project
        self.region = region
        self.faults = faults
        self.logs = logs
        self.local_images: dict[str, list[str]] = dict(catalog.local_images() if catalog else {})
        self.local_images.update(local_images or {})
        self.secrets = dict(secrets or {})
        self.max_running_tasks = max_running_tasks or DEFAULT_MAX_RUNNING_TASKS
        self.use_docker = use_docker
        self.docker = DockerProbe()
        self.procs = ProcessGroups(kill_grace_seconds)
        self.counters = Counters()
        self._slots = asyncio.Semaphore(self.max_running_tasks)
        self._running_tasks = 0
        self._seq = itertools.count(1)
        self._rng = random.Random()  # noqa: S311 - execution name suffixes, not secrets
        self._jobs: dict[str, JobRec] = {}
        self._job_order: list[JobRec] = []
        self._executions: dict[str, ExecutionRec] = {}
        self._operations: dict[str, OperationRec] = {}
        self._op_order: list[OperationRec] = []
        self._host_env = {k: os.environ[k] for k in HOST_ENV_KEEP if k in os.environ}
        for job in catalog or []:
            self._create_job(project, region, job.name, job_from_definition(job))

    # ------------------------------------------------------------------ jobs

    def _parent(self, project: str, location: str) -> str:
        return f"projects/{project}/locations/{location}"

    def job(self, project: str, location: str, job_id: str) -> JobRec:
        name = f"{self._parent(project, location)}/jobs/{job_id}"
        rec = self._jobs.get(name)
        if rec is None:
            raise not_found("JOB", job_id) from None
        return rec

    def create_job(self, project: str, location: str, job_id: str, body: Any, validate_only: bool) -> dict[str, Any]:
        """CreateJob: the finished operation holding the new Job."""
        if not job_id:
            raise invalid("job_id", "job_id is required", "The request has errors: job_id is required.")
        if not limits.JOB_NAME_RE.match(job_id):
            raise invalid(
                "job_id",
                "must use only lowercase letters, digits and hyphens, start with a letter, "
                "not end with a hyphen, and be at most 63 characters",
            )
        spec = parse_job(body)
        name = f"{self._parent(project, location)}/jobs/{job_id}"
        if name in self._jobs:
            raise ApiError("ALREADY_EXISTS", f"Resource '{job_id}' already exists.")
        if validate_only:
            return self._job_operation(project, location, self._render_preview(name, spec))
        rec = self._create_job(project, location, job_id, spec)
        return self._job_operation(project, location, self.render_job(rec))

    def _create_job(self, project: str, location: str, job_id: str, spec: dict[str, Any]) -> JobRec:
        now = _now()
        name = f"{self._parent(project, location)}/jobs/{job_id}"
        rec = JobRec(name, project, location, job_id, str(uuid.uuid4()), spec, now, next(self._seq), now)
        self._jobs[name] = rec
        self._job_order.append(rec)
        return rec

    def update_job(
        self, project: str, location: str, job_id: str, body: Any, allow_missing: bool, validate_only: bool
    ) -> dict[str, Any]:
        """UpdateJob: replaces the job's spec; with allow_missing, creates it."""
        spec = parse_job(body)
        name = f"{self._parent(project, location)}/jobs/{job_id}"
        rec = self._jobs.get(name)
        if rec is None:
            if not allow_missing:
                raise not_found("JOB", job_id)
            return self.create_job(project, location, job_id, body, validate_only)
        etag = body.get("etag") if isinstance(body, dict) else None
        if etag and etag != _etag(rec.uid, rec.generation):
            raise ApiError("ABORTED", f"The etag of job '{job_id}' does not match: it was modified.")
        if validate_only:
            return self._job_operation(project, location, self._render_preview(name, spec))
        rec.spec = spec
        rec.generation += 1
        rec.update_time = _now()
        return self._job_operation(project, location, self.render_job(rec))

    def delete_job(self, project: str, location: str, job_id: str, etag: str, validate_only: bool) -> dict[str, Any]:
        """DeleteJob: removes the job and its executions, stopping any still running."""
        rec = self.job(project, location, job_id)
        if etag and etag != _etag(rec.uid, rec.generation):
            raise ApiError("ABORTED", f"The etag of job '{job_id}' does not match: it was modified.")
        rendered = self.render_job(rec)
        if validate_only:
            return self._job_operation(project, location, rendered)
        for ex in list(rec.executions):
            self._remove_execution(ex)
        del self._jobs[rec.name]
        self._job_order.remove(rec)
        rendered["deleteTime"] = rfc3339(_now())
        return self._job_operation(project, location, rendered)

    def list_jobs(self, project: str, location: str, page_size: Any, page_token: str) -> dict[str, Any]:
        """ListJobs, in creation order."""
        parent = self._parent(project, location)
        size = _page_size(page_size)
        after = _token_seq(page_token, "jobs") or 0
        start = bisect.bisect_right(self._job_order, after, key=lambda j: j.seq)
        matching = (rec for rec in itertools.islice(self._job_order, start, None) if rec.name.startswith(parent + "/"))
        chosen = list(itertools.islice(matching, size + 1))
        token = _make_token("jobs", chosen[size - 1].seq) if len(chosen) > size else ""
        return _list_body("jobs", [self.render_job(rec) for rec in chosen[:size]], token)

    def render_job(self, rec: JobRec) -> dict[str, Any]:
        """The Job resource as the API returns it."""
        out = copy.deepcopy(rec.spec)
        out.update(
            name=rec.name,
            uid=rec.uid,
            generation=str(rec.generation),
            createTime=rfc3339(rec.create_time),
            updateTime=rfc3339(rec.update_time),
            creator="emulator@localhost",
            lastModifier="emulator@localhost",
            observedGeneration=str(rec.generation),
            terminalCondition={
                "type": "Ready",
                "state": "CONDITION_SUCCEEDED",
                "lastTransitionTime": rfc3339(rec.update_time),
            },
            executionCount=rec.execution_count,
            etag=_etag(rec.uid, rec.generation),
        )
        out.setdefault("launchStage", "GA")
        if rec.executions:
            latest = rec.executions[-1]
            ref: dict[str, Any] = {
                "name": latest.exec_id,
                "createTime": rfc3339(latest.create_time),
                "completionStatus": {
                    "PENDING": "EXECUTION_PENDING",
                    "RUNNING": "EXECUTION_RUNNING",
                    "SUCCEEDED": "EXECUTION_SUCCEEDED",
                    "FAILED": "EXECUTION_FAILED",
                    "CANCELLED": "EXECUTION_CANCELLED",
                }[latest.state],
            }
            if latest.completion_time is not None:
                ref["completionTime"] = rfc3339(latest.completion_time)
            out["latestCreatedExecution"] = ref
        if not out.get("executionCount"):
            out.pop("executionCount")
        return out

    def _render_preview(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(spec)
        out["name"] = name
        return out

    def _job_operation(self, project: str, location: str, job: dict[str, Any]) -> dict[str, Any]:
        return self.render_operation(self._new_operation(project, location, response=job))

    def _new_operation(
        self,
        project: str,
        location: str,
        *,
        execution: ExecutionRec | None = None,
        response: dict[str, Any] | None = None,
        type_url: str = JOB_TYPE,
        store: bool = True,
    ) -> OperationRec:
        name = f"{self._parent(project, location)}/operations/{uuid.uuid4()}"
        op = OperationRec(name, next(self._seq), execution, response, type_url)
        if store:
            self._operations[op.name] = op
            self._op_order.append(op)
        return op

    # ------------------------------------------------------------ executions

    def run_job(self, project: str, location: str, job_id: str, body: Any) -> dict[str, Any]:
        """RunJob: starts an execution and returns its operation, done when the execution finishes."""
        rec = self.job(project, location, job_id)
        request = parse_message(run_v2.RunJobRequest, body, "RunJobRequest")
        etag = request.get("etag")
        if etag and etag != _etag(rec.uid, rec.generation):
            raise ApiError("ABORTED", f"The etag of job '{job_id}' does not match: it was modified.")
        exec_template = rec.spec["template"]
        task_template = copy.deepcopy(exec_template["template"])
        task_count = int(exec_template.get("taskCount") or 1)
        overrides = request.get("overrides") or {}
        task_count = apply_overrides(task_template, overrides, task_count)
        if request.get("validateOnly"):
            preview = {"job": job_id, "template": task_template, "taskCount": task_count}
            op = self._new_operation(project, location, response=preview, type_url=EXECUTION_TYPE, store=False)
            return self.render_operation(op)
        ex = self._new_execution(rec, task_template, task_count)
        op = self._new_operation(project, location, execution=ex)
        if self.faults.execution_stuck():
            log.debug("fault: execution %s stays pending", ex.name)
        else:
            ex.driver = asyncio.get_running_loop().create_task(self._drive(ex))
        return self.render_operation(op)

    def _new_execution(self, rec: JobRec, task_template: dict[str, Any], task_count: int) -> ExecutionRec:
        while True:
            exec_id = f"{rec.job_id}-{_suffix(self._rng)}"
            name = f"{rec.name}/executions/{exec_id}"
            if name not in self._executions:
                break
        exec_template = rec.spec["template"]
        parallelism = int(exec_template.get("parallelism") or 0)
        labels = {**rec.spec.get("labels", {}), **exec_template.get("labels", {})}
        annotations = dict(exec_template.get("annotations", {}))
        now = _now()
        ex = ExecutionRec(
            name=name,
            exec_id=exec_id,
            job=rec,
            uid=str(uuid.uuid4()),
            seq=next(self._seq),
            create_time=now,
            task_count=task_count,
            parallelism=min(parallelism, task_count),
            template=task_template,
            labels=labels,
            annotations=annotations,
        )
        ex.tasks = [
            TaskRec(index=i, name=f"{name}/tasks/{exec_id}-task{i}", uid=str(uuid.uuid4())) for i in range(task_count)
        ]
        self._executions[name] = ex
        rec.executions.append(ex)
        rec.execution_count += 1
        return ex

    def execution(self, project: str, location: str, job_id: str, exec_id: str) -> ExecutionRec:
        name = f"{self._parent(project, location)}/jobs/{job_id}/executions/{exec_id}"
        ex = self._executions.get(name)
        if ex is None:
            raise not_found("EXECUTION", exec_id)
        return ex

    def list_executions(
        self, project: str, location: str, job_id: str, page_size: Any, page_token: str
    ) -> dict[str, Any]:
        """ListExecutions of one job, newest first (as Cloud Run orders them)."""
        rec = self.job(project, location, job_id)
        size = _page_size(page_size)
        before = _token_seq(page_token, "executions")
        lag = self.faults.faults.for_method("Executions.ListExecutions").list_lag_seconds
        listed = [e for e in rec.executions if e.create_time <= _now() - lag] if lag else rec.executions
        end = len(listed)
        if before:
            end = bisect.bisect_left(listed, before, key=lambda e: e.seq)
        page = [self.render_execution(e) for e in reversed(listed[max(0, end - size) : end])]
        token = _make_token("executions", listed[end - size].seq) if end > size else ""
        return _list_body("executions", page, token)

    def cancel_execution(self, project: str, location: str, job_id: str, exec_id: str, body: Any) -> dict[str, Any]:
        """CancelExecution: stops the tasks; the operation is done once they are all gone."""
        ex = self.execution(project, location, job_id, exec_id)
        etag = body.get("etag") if isinstance(body, dict) else None
        if etag and etag != self._exec_etag(ex):
            raise ApiError("ABORTED", f"The etag of execution '{exec_id}' does not match.")
        op = self._new_operation(project, location, execution=ex)
        if not (isinstance(body, dict) and body.get("validateOnly")):
            self._cancel(ex)
        return self.render_operation(op)

    def _cancel(self, ex: ExecutionRec) -> None:
        if ex.finished or ex.cancelling:
            return
        ex.cancelling = True
        ex.version += 1
        ex.cancel_event.set()
        if ex.driver is None:
            self._finish(ex)
            return
        for task in ex.tasks:
            if task.pid is not None:
                asyncio.get_running_loop().create_task(self.procs.stop(task.pid))

    def delete_execution(
        self, project: str, location: str, job_id: str, exec_id: str, etag: str, validate_only: bool
    ) -> dict[str, Any]:
        """DeleteExecution: stops what still runs and removes the execution."""
        ex = self.execution(project, location, job_id, exec_id)
        if etag and etag != self._exec_etag(ex):
            raise ApiError("ABORTED", f"The etag of execution '{exec_id}' does not match.")
        if not validate_only:
            self._remove_execution(ex)
        rendered = self.render_execution(ex)
        rendered["deleteTime"] = rfc3339(_now())
        op = self._new_operation(project, location, response=rendered, type_url=EXECUTION_TYPE)
        return self.render_operation(op)

    def _remove_execution(self, ex: ExecutionRec) -> None:
        self._cancel(ex)
        self._executions.pop(ex.name, None)
        jobs_list = ex.job.executions
        index = bisect.bisect_left(jobs_list, ex.seq, key=lambda e: e.seq)
        if index < len(jobs_list) and jobs_list[index] is ex:
            jobs_list.pop(index)

    def _exec_etag(self, ex: ExecutionRec) -> str:
        return _etag(ex.uid, ex.version)

    def render_execution(self, ex: ExecutionRec) -> dict[str, Any]:
        """The Execution resource as the API returns it."""
        out: dict[str, Any] = {
            "name": ex.name,
            "uid": ex.uid,
            "creator": "emulator@localhost",
            "generation": "1",
            "createTime": rfc3339(ex.create_time),
            "updateTime": rfc3339(ex.completion_time or ex.start_time or ex.create_time),
            "launchStage": ex.job.spec.get("launchStage", "GA"),
            "job": ex.job.job_id,
            "taskCount": ex.task_count,
            "template": ex.template,
            "reconciling": not ex.finished,
            "conditions": self._execution_conditions(ex),
            "observedGeneration": "1",
            "logUri": (
                "https://console.cloud.google.com/logs/viewer?project="
                f"{ex.job.project}&advancedFilter=resource.type%3D%22cloud_run_job%22%0A"
                f"labels.%22run.googleapis.com/execution_name%22%3D%22{ex.exec_id}%22"
            ),
            "etag": self._exec_etag(ex),
        }
        if ex.labels:
            out["labels"] = ex.labels
        if ex.annotations:
            out["annotations"] = ex.annotations
        if ex.parallelism:
            out["parallelism"] = ex.parallelism
        if ex.start_time is not None:
            out["startTime"] = rfc3339(ex.start_time)
        if ex.completion_time is not None:
            out["completionTime"] = rfc3339(ex.completion_time)
        for key, value in (
            ("runningCount", ex.running),
            ("succeededCount", ex.succeeded),
            ("failedCount", ex.failed),
            ("cancelledCount", ex.cancelled),
            ("retriedCount", ex.retried),
        ):
            if value:
                out[key] = value
        return out

    def _execution_conditions(self, ex: ExecutionRec) -> list[dict[str, Any]]:
        created = rfc3339(ex.create_time)
        started = rfc3339(ex.start_time) if ex.start_time else created
        ended = rfc3339(ex.completion_time) if ex.completion_time else started
        if ex.state == "PENDING":
            pending = {"state": "CONDITION_PENDING", "lastTransitionTime": created}
            return [
                {"type": "ResourcesAvailable", **pending},
                {"type": "Started", **pending},
                {"type": "Completed", **pending},
            ]
        out: list[dict[str, Any]] = [
            {"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": started},
            {"type": "Started", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": started},
        ]
        completed: dict[str, Any] = {"type": "Completed", "lastTransitionTime": ended}
        if ex.state == "RUNNING" and ex.cancelling:
            completed.update(
                state="CONDITION_RECONCILING", executionReason="CANCELLING", message="The execution is being cancelled."
            )
        elif ex.state == "RUNNING":
            completed.update(state="CONDITION_PENDING")
        elif ex.state == "SUCCEEDED":
            seconds = (ex.completion_time or 0) - (ex.start_time or 0)
            completed.update(
                state="CONDITION_SUCCEEDED", message=f"Execution completed successfully in {seconds:.2f}s."
            )
        elif ex.state == "CANCELLED":
            completed.update(
                state="CONDITION_FAILED", executionReason="CANCELLED", message="The execution was cancelled."
            )
        else:
            completed.update(state="CONDITION_FAILED", severity="ERROR", message=ex.first_failure)
            if not ex.first_failure_timeout:
                completed["executionReason"] = "NON_ZERO_EXIT_CODE"
        out.append(completed)
        if ex.retried:
            out.append(
                {
                    "type": "Retry",
                    "state": "CONDITION_SUCCEEDED",
                    "lastTransitionTime": ended,
                    "message": f"{ex.retried} task(s) retried.",
                }
            )
        return out

    # ----------------------------------------------------------------- tasks

    def task(
        self, project: str, location: str, job_id: str, exec_id: str, task_id: str
    ) -> tuple[ExecutionRec, TaskRec]:
        ex = self.execution(project, location, job_id, exec_id)
        prefix = f"{exec_id}-task"
        if task_id.startswith(prefix) and task_id[len(prefix) :].isdigit():
            index = int(task_id[len(prefix) :])
            if index < len(ex.tasks) and str(index) == task_id[len(prefix) :]:
                return ex, ex.tasks[index]
        raise not_found("TASK", task_id)

    def list_tasks(
        self, project: str, location: str, job_id: str, exec_id: str, page_size: Any, page_token: str
    ) -> dict[str, Any]:
        """ListTasks of one execution, by index."""
        ex = self.execution(project, location, job_id, exec_id)
        size = _page_size(page_size)
        start = _token_seq(page_token, "tasks") or 0
        chunk = ex.tasks[start : start + size]
        token = _make_token("tasks", start + size) if start + size < len(ex.tasks) else ""
        return _list_body("tasks", [self.render_task(ex, t) for t in chunk], token)

    def render_task(self, ex: ExecutionRec, task: TaskRec) -> dict[str, Any]:
        """The Task resource as the API returns it."""
        template = ex.template
        out: dict[str, Any] = {
            "name": task.name,
            "uid": task.uid,
            "generation": "1",
            "createTime": rfc3339(ex.create_time),
            "updateTime": rfc3339(task.completion_time or task.start_time or ex.create_time),
            "job": ex.job.job_id,
            "execution": ex.exec_id,
            "containers": template.get("containers", []),
            "maxRetries": template.get("maxRetries", DEFAULT_MAX_RETRIES),
            "timeout": template.get("timeout", DEFAULT_TASK_TIMEOUT),
            "reconciling": task.state in ("PENDING", "RUNNING"),
            "conditions": self._task_conditions(ex, task),
            "observedGeneration": "1",
            "index": task.index,
            "logUri": (
                "https://console.cloud.google.com/logs/viewer?project="
                f"{ex.job.project}&advancedFilter=resource.type%3D%22cloud_run_job%22%0A"
                f"labels.%22run.googleapis.com/execution_name%22%3D%22{ex.exec_id}%22%0A"
                f"labels.%22run.googleapis.com/task_index%22%3D%22{task.index}%22"
            ),
            "etag": _etag(task.uid, task.version),
        }
        for key in ("serviceAccount", "executionEnvironment", "volumes", "encryptionKey", "vpcAccess"):
            if key in template:
                out[key] = template[key]
        if ex.labels:
            out["labels"] = ex.labels
        if task.scheduled_time is not None:
            out["scheduledTime"] = rfc3339(task.scheduled_time)
        if task.start_time is not None:
            out["startTime"] = rfc3339(task.start_time)
        if task.completion_time is not None:
            out["completionTime"] = rfc3339(task.completion_time)
        if task.retried:
            out["retried"] = task.retried
        if task.exit_code is not None or task.status_code != "OK":
            status: dict[str, Any] = {}
            if task.status_code != "OK":
                status = {"code": RPC_CODE[task.status_code], "message": task.status_message}
            result: dict[str, Any] = {"status": status}
            if task.exit_code:
                result["exitCode"] = task.exit_code
            out["lastAttemptResult"] = result
        return out

    def _task_conditions(self, ex: ExecutionRec, task: TaskRec) -> list[dict[str, Any]]:
        when = rfc3339(task.completion_time or task.start_time or ex.create_time)
        if task.state == "PENDING":
            return [
                {"type": "Started", "state": "CONDITION_PENDING", "lastTransitionTime": when},
                {"type": "Completed", "state": "CONDITION_PENDING", "lastTransitionTime": when},
            ]
        started = {
            "type": "Started",
            "state": "CONDITION_SUCCEEDED",
            "lastTransitionTime": rfc3339(task.start_time or ex.create_time),
        }
        if task.state == "CANCELLED" and task.start_time is None:
            started = {"type": "Started", "state": "CONDITION_FAILED", "lastTransitionTime": when}
        completed: dict[str, Any] = {"type": "Completed", "lastTransitionTime": when}
        if task.state == "RUNNING":
            completed["state"] = "CONDITION_PENDING"
        elif task.state == "SUCCEEDED":
            completed.update(state="CONDITION_SUCCEEDED", message="Task completed successfully.")
        elif task.state == "CANCELLED":
            completed.update(state="CONDITION_FAILED", executionReason="CANCELLED", message=MSG_CANCELLED)
        else:
            completed.update(state="CONDITION_FAILED", severity="ERROR", message=task.status_message)
            if task.status_message == MSG_NONZERO:
                completed["executionReason"] = "NON_ZERO_EXIT_CODE"
        return [started, completed]

    # ------------------------------------------------------------ operations

    def operation(self, project: str, location: str, op_id: str) -> OperationRec:
        op = self._operations.get(f"{self._parent(project, location)}/operations/{op_id}")
        if op is None:
            raise not_found("OPERATION", op_id)
        return op

    def render_operation(self, op: OperationRec) -> dict[str, Any]:
        """The google.longrunning.Operation, with the Execution or Job as metadata and response."""
        ex = op.execution
        if ex is None:
            body = op.response or {}
            return {
                "name": op.name,
                "metadata": {"@type": op.type_url, **body},
                "done": True,
                "response": {"@type": op.type_url, **body},
            }
        rendered = self.render_execution(ex)
        out: dict[str, Any] = {"name": op.name, "metadata": {"@type": EXECUTION_TYPE, **rendered}}
        if ex.finished:
            out["done"] = True
            if ex.state == "FAILED":
                out["error"] = {"code": RPC_CODE["FAILED_PRECONDITION"], "message": ex.first_failure}
            else:
                out["response"] = {"@type": EXECUTION_TYPE, **rendered}
        return out

    async def wait_operation(self, op: OperationRec, timeout: float) -> dict[str, Any]:
        """WaitOperation: the operation once done, or as it is when the timeout passes."""
        if op.execution is not None and not op.execution.finished:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(op.execution.done.wait(), min(timeout, MAX_WAIT_SECONDS))
        return self.render_operation(op)

    def list_operations(self, project: str, location: str, page_size: Any, page_token: str) -> dict[str, Any]:
        """ListOperations of one location, oldest first."""
        parent = self._parent(project, location) + "/"
        size = _page_size(page_size, maximum=OPERATIONS_MAX_PAGE_SIZE, default=OPERATIONS_MAX_PAGE_SIZE)
        after = _token_seq(page_token, "operations") or 0
        start = bisect.bisect_right(self._op_order, after, key=lambda o: o.seq)
        matching = (op for op in itertools.islice(self._op_order, start, None) if op.name.startswith(parent))
        chosen = list(itertools.islice(matching, size + 1))
        token = _make_token("operations", chosen[size - 1].seq) if len(chosen) > size else ""
        return _list_body("operations", [self.render_operation(op) for op in chosen[:size]], token)

    def delete_operation(self, project: str, location: str, op_id: str) -> dict[str, Any]:
        """DeleteOperation: forgets the operation (not the execution behind it)."""
        op = self.operation(project, location, op_id)
        del self._operations[op.name]
        self._op_order.remove(op)
        return {}

    # ------------------------------------------------------------- scheduling

    async def _acquire(self, sem: asyncio.Semaphore, ex: ExecutionRec) -> bool:
        """Take a slot, unless the execution is cancelled while waiting for one."""
        if ex.cancelling:
            return False
        acquire = asyncio.ensure_future(sem.acquire())
        cancelled = asyncio.ensure_future(ex.cancel_event.wait())
        await asyncio.wait({acquire, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        cancelled.cancel()
        if acquire.done() and not acquire.cancelled():
            if ex.cancelling:
                sem.release()
                return False
            return True
        acquire.cancel()
        return False

    async def _drive(self, ex: ExecutionRec) -> None:
        ex.state = "RUNNING"
        ex.start_time = _now()
        ex.version += 1
        self.counters.executions_started += 1
        own = asyncio.Semaphore(ex.parallelism or ex.task_count)
        running: set[asyncio.Task[None]] = set()
        try:
            for task in ex.tasks:
                if not await self._acquire(own, ex):
                    break
                if not await self._acquire(self._slots, ex):
                    own.release()
                    break
                runner = asyncio.get_running_loop().create_task(self._run_task(ex, task))
                running.add(runner)

                def release(done: asyncio.Task[None], own: asyncio.Semaphore = own) -> None:
                    running.discard(done)
                    own.release()
                    self._slots.release()

                runner.add_done_callback(release)
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            self._finish(ex)

    def _finish(self, ex: ExecutionRec) -> None:
        if ex.finished:
            return
        now = _now()
        for task in ex.tasks:
            if task.state in ("PENDING", "RUNNING"):
                task.state = "CANCELLED"
                task.completion_time = now
                task.version += 1
                ex.cancelled += 1
        ex.running = 0
        if ex.cancelling:
            ex.state = "CANCELLED"
        elif ex.failed:
            ex.state = "FAILED"
        else:
            ex.state = "SUCCEEDED"
        ex.completion_time = now
        ex.version += 1
        ex.done.set()

    def _task_env(
        self, ex: ExecutionRec, task: TaskRec, container: dict[str, Any]
    ) -> tuple[dict[str, str], str | None]:
        env = dict(self._host_env)
        for var in container.get("env", []):
            name = var.get("name", "")
            if "value" in var or "valueSource" not in var:
                env[name] = var.get("value", "")
                continue
            ref = var["valueSource"].get("secretKeyRef", {})
            value = self._secret(ref.get("secret", ""), ref.get("version", "latest"))
            if value is None:
                return {}, (
                    f"Secret '{ref.get('secret', '')}' (version {ref.get('version', 'latest')}) for "
                    f"environment variable {name} has no local value. Give the emulator its value: "
                    "Emulator(secrets={'NAME': 'value'}) or `fanout emulator --secret NAME=VALUE`."
                )
            env[name] = value
        env.update(
            CLOUD_RUN_JOB=ex.job.job_id,
            CLOUD_RUN_EXECUTION=ex.exec_id,
            CLOUD_RUN_TASK_INDEX=str(task.index),
            CLOUD_RUN_TASK_COUNT=str(ex.task_count),
            CLOUD_RUN_TASK_ATTEMPT=str(task.attempt),
        )
        return env, None

    def _secret(self, secret: str, version: str) -> str | None:
        short = secret.rsplit("/", 1)[-1]
        for key in (f"{secret}/versions/{version}", f"{short}/versions/{version}", f"{short}:{version}", secret, short):
            if key in self.secrets:
                return self.secrets[key]
        return None

    async def _argv(
        self, container: dict[str, Any], env: Mapping[str, str], docker_name: str
    ) -> tuple[list[str] | None, str | None]:
        command = list(container.get("command", []))
        args = list(container.get("args", []))
        image = container.get("image", "")
        if command:
            return command + args, None
        if image in self.local_images:
            return list(self.local_images[image]) + args, None
        if self.use_docker and await self.docker.available():
            passed = [item for name in env if name not in self._host_env for item in ("-e", name)]
            return ["docker", "run", "--rm", "--name", docker_name, *passed, image, *args], None
        return None, (
            f"Image '{image}' has no command and no local entrypoint, so the emulator cannot tell what it "
            f"runs. Set the container's command, map the image to a local command "
            f"(Emulator(local_images={{'{image}': ['python', 'main.py']}}), `fanout emulator --image "
            f"{image}=CMD`, or `local.entrypoint` in the job's job.yaml), or enable Docker "
            "(use_docker=True / --docker) with a reachable engine."
        )

    async def _run_task(self, ex: ExecutionRec, task: TaskRec) -> None:
        task.scheduled_time = _now()
        self.counters.tasks_started += 1
        ex.running += 1
        self._running_tasks += 1
        self.counters.peak_running = max(self.counters.peak_running, self._running_tasks)
        try:
            await self._attempts(ex, task)
        except Exception:
            # A bug here must not take the scheduler down: the task fails and says why.
            log.exception("task %s crashed in the emulator", task.name)
            if task.state not in ("SUCCEEDED", "FAILED", "CANCELLED"):
                self._task_failed(ex, task, "INTERNAL", "The emulator failed to run this task.", None)
        finally:
            task.pid = None
            ex.running -= 1
            self._running_tasks -= 1
            ex.version += 1

    async def _attempts(self, ex: ExecutionRec, task: TaskRec) -> None:
        template = ex.template
        container = (template.get("containers") or [{}])[0]
        max_retries = int(template.get("maxRetries", DEFAULT_MAX_RETRIES))
        timeout = parse_duration(template.get("timeout", DEFAULT_TASK_TIMEOUT))
        while True:
            task.state = "RUNNING"
            task.start_time = _now()
            task.version += 1
            ex.version += 1
            outcome, setup_error = await self._attempt(ex, task, container, timeout)
            if setup_error is not None:
                # Configuration problems (no entrypoint, no secret value) fail at once: a retry cannot help.
                self._task_failed(ex, task, "FAILED_PRECONDITION", setup_error, None)
                return
            assert outcome is not None
            succeeded = outcome.exit_code == 0 and not outcome.timed_out
            if succeeded and not outcome.killed_by_request:
                task.state = "SUCCEEDED"
                task.exit_code = 0
                task.status_code, task.status_message = "OK", ""
                task.completion_time = _now()
                task.version += 1
                ex.succeeded += 1
                return
            if ex.cancelling or outcome.killed_by_request:
                task.state = "CANCELLED"
                task.exit_code = None
                task.status_code, task.status_message = "CANCELLED", MSG_CANCELLED
                task.completion_time = _now()
                task.version += 1
                ex.cancelled += 1
                return
            if outcome.timed_out:
                # Cloud Run reports no exit code for a task it stopped at its timeout.
                task.exit_code, task.status_code, task.status_message = None, "DEADLINE_EXCEEDED", MSG_TIMEOUT
            else:
                task.exit_code, task.status_code, task.status_message = outcome.exit_code, "UNKNOWN", MSG_NONZERO
            if task.attempt >= max_retries:
                self._task_failed(
                    ex, task, task.status_code, task.status_message, task.exit_code, timed_out=outcome.timed_out
                )
                return
            if task.retried == 0:
                ex.retried += 1
            task.retried += 1
            task.attempt += 1

    def _task_failed(
        self,
        ex: ExecutionRec,
        task: TaskRec,
        code: str,
        message: str,
        exit_code: int | None,
        *,
        timed_out: bool = False,
    ) -> None:
        task.state = "FAILED"
        task.status_code, task.status_message, task.exit_code = code, message, exit_code
        task.completion_time = _now()
        task.version += 1
        ex.failed += 1
        if not ex.first_failure:
            task_id = task.name.rsplit("/", 1)[-1]
            ex.first_failure = f"Task {task_id} failed with message: {message}"
            ex.first_failure_timeout = timed_out

    async def _attempt(
        self, ex: ExecutionRec, task: TaskRec, container: dict[str, Any], timeout: float
    ) -> tuple[Outcome | None, str | None]:
        env, problem = self._task_env(ex, task, container)
        if problem is not None:
            return None, problem
        docker_name = f"cloudrun-emulator-{ex.exec_id}-{task.index}-{task.attempt}"
        argv, problem = await self._argv(container, env, docker_name)
        if problem is not None or argv is None:
            return None, problem
        instance_id = uuid.uuid4().hex
        job, project = ex.job.job_id, ex.job.project
        write = self.logs.write

        def on_line(stream: str, line: str) -> None:
            write(
                project=project,
                region=ex.job.location,
                job=job,
                execution=ex.exec_id,
                task_index=task.index,
                attempt=task.attempt,
                instance_id=instance_id,
                stream=stream,
                line=line,
            )

        cwd = container.get("workingDir")
        if cwd and not os.path.isdir(cwd):
            cwd = None
        self.counters.attempts_started += 1

        def started(pid: int) -> None:
            task.pid = pid

        try:
            outcome = await self.procs.run(
                argv, env, cwd, timeout, on_line, kill_after=self.faults.task_kill_delay(), on_start=started
            )
        except OSError as exc:
            return None, f"The command {argv[0]!r} could not be started: {exc.strerror or exc}."
        finally:
            task.pid = None
        if argv[0] == "docker" and (outcome.timed_out or outcome.killed_by_request or outcome.exit_code):
            await self._docker_rm(docker_name)
        if outcome.exit_code and not outcome.timed_out and not outcome.killed_by_request:
            on_line("varlog/system", f"Container called exit({outcome.exit_code}).")
        return outcome, None

    async def _docker_rm(self, name: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "docker", "rm", "-f", name, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    # --------------------------------------------------------------- control

    def task_stats(self) -> dict[str, int]:
        """Counters about task processes, for tests and benchmarks."""
        return {
            "tasks_started": self.counters.tasks_started,
            "attempts_started": self.counters.attempts_started,
            "running_tasks": self._running_tasks,
            "running_processes": self.procs.running,
            "peak_running_tasks": self.counters.peak_running,
            "executions_started": self.counters.executions_started,
            "log_entries": len(self.logs),
        }

    def reset_peak(self) -> None:
        self.counters.peak_running = self._running_tasks

    async def shutdown(self) -> None:
        """Kill every task process group and finish every execution."""
        self.procs.kill_all()
        drivers = [ex.driver for ex in self._executions.values() if ex.driver and not ex.driver.done()]
        for ex in self._executions.values():
            if not ex.finished:
                ex.cancelling = True
                ex.cancel_event.set()
        if drivers:
            await asyncio.wait(drivers, timeout=5.0)
        for ex in self._executions.values():
            self._finish(ex)


# ---------------------------------------------------------------- parsing


def parse_message(message_type: Any, body: Any, what: str) -> dict[str, Any]:
    """Validate a JSON body against a run_v2 message type; returns it normalised (camelCase, enum names)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise invalid(
            what,
            "Invalid JSON payload received. Expected an object.",
            "Invalid JSON payload received. Expected an object.",
        )
    pb = message_type.pb(message_type())
    try:
        json_format.ParseDict(body, pb, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        text = str(exc)
        raise invalid(
            what, f"Invalid JSON payload received. {text}", f"Invalid JSON payload received. {text}"
        ) from None
    parsed: dict[str, Any] = json_format.MessageToDict(pb, preserving_proto_field_name=False)
    return parsed


_OUTPUT_ONLY_JOB_FIELDS = (
    "uid",
    "generation",
    "createTime",
    "updateTime",
    "deleteTime",
    "expireTime",
    "creator",
    "lastModifier",
    "observedGeneration",
    "terminalCondition",
    "conditions",
    "executionCount",
    "latestCreatedExecution",
    "reconciling",
    "satisfiesPzs",
    "etag",
    "name",
)


def parse_job(body: Any) -> dict[str, Any]:
    """A Job request body, validated as Cloud Run validates it, with Cloud Run's defaults applied."""
    spec = parse_message(run_v2.Job, body, "job")
    for key in _OUTPUT_ONLY_JOB_FIELDS:
        spec.pop(key, None)
    template = spec.get("template")
    if not template or not template.get("template", {}).get("containers"):
        raise invalid(
            "job.template.template.containers",
            "a job needs at least one container",
            "The request has errors: job.template.template.containers: at least one is required.",
        )
    task_template = template["template"]
    containers = task_template["containers"]
    problems: dict[str, str] = {}
    if len(containers) > 10:
        problems["job.template.template.containers"] = "at most 10 containers"
    for i, container in enumerate(containers):
        if not container.get("image"):
            problems[f"job.template.template.containers[{i}].image"] = "an image is required"
        for j, var in enumerate(container.get("env", [])):
            problem = limits.env_name_problem(var.get("name", ""))
            if problem:
                problems[f"job.template.template.containers[{i}].env[{j}].name"] = problem
        if len(container.get("env", [])) > limits.MAX_ENV_VARS_PER_CONTAINER:
            problems[f"job.template.template.containers[{i}].env"] = (
                f"at most {limits.MAX_ENV_VARS_PER_CONTAINER} environment variables"
            )
        container.setdefault("resources", {"limits": {"cpu": "1000m", "memory": "512Mi"}})
    task_count = template.get("taskCount", 1) or 1
    if not 1 <= task_count <= limits.MAX_TASKS_PER_EXECUTION:
        problems["job.template.task_count"] = f"must be between 1 and {limits.MAX_TASKS_PER_EXECUTION}"
    if template.get("parallelism", 0) < 0:
        problems["job.template.parallelism"] = "must be 0 or more"
    retries = task_template.get("maxRetries", DEFAULT_MAX_RETRIES)
    if not 0 <= retries <= limits.MAX_RETRIES:
        problems["job.template.template.max_retries"] = f"must be between 0 and {limits.MAX_RETRIES}"
    if "timeout" in task_template:
        problem = _timeout_problem(task_template["timeout"])
        if problem:
            problems["job.template.template.timeout"] = problem
    if problems:
        raise ApiError(
            "INVALID_ARGUMENT",
            "The request has errors: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
            field_violations=problems,
        )
    template["taskCount"] = task_count
    task_template.setdefault("maxRetries", DEFAULT_MAX_RETRIES)
    task_template.setdefault("timeout", DEFAULT_TASK_TIMEOUT)
    return spec


def _timeout_problem(timeout: str) -> str | None:
    try:
        seconds = parse_duration(timeout)
    except ValueError:
        seconds = -1
    if not 0 < seconds <= limits.MAX_TASK_TIMEOUT_SECONDS:
        return f"must be between 1s and {limits.MAX_TASK_TIMEOUT_SECONDS}s"
    return None


def apply_overrides(task_template: dict[str, Any], overrides: dict[str, Any], task_count: int) -> int:
    """Apply RunJob overrides to a copy of the job's task template; returns the execution's task count."""
    containers = task_template["containers"]
    problems: dict[str, str] = {}
    for i, override in enumerate(overrides.get("containerOverrides", [])):
        where = f"overrides.container_overrides[{i}]"
        name = override.get("name", "")
        target = next((c for c in containers if c.get("name", "") == name), None) if name else containers[0]
        if target is None:
            problems[f"{where}.name"] = f"no container named {name!r} in the job"
            continue
        if override.get("clearArgs") and override.get("args"):
            problems[f"{where}.clear_args"] = "clear_args cannot be set together with args"
            continue
        if override.get("clearArgs"):
            target.pop("args", None)
        elif override.get("args"):
            target["args"] = list(override["args"])
        if override.get("env"):
            merged = {var["name"]: var for var in target.get("env", [])}
            for j, var in enumerate(override["env"]):
                problem = limits.env_name_problem(var.get("name", ""))
                if problem:
                    problems[f"{where}.env[{j}].name"] = problem
                merged[var.get("name", "")] = var
            target["env"] = list(merged.values())
    if "taskCount" in overrides:
        count = overrides["taskCount"]
        if not 0 <= count <= limits.MAX_TASKS_PER_EXECUTION:
            problems["overrides.task_count"] = f"must be between 0 and {limits.MAX_TASKS_PER_EXECUTION}"
        elif count:
            task_count = count
    if "timeout" in overrides:
        problem = _timeout_problem(overrides["timeout"])
        if problem:
            problems["overrides.timeout"] = problem
        else:
            task_template["timeout"] = overrides["timeout"]
    if problems:
        raise ApiError(
            "INVALID_ARGUMENT",
            "The request has errors: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
            field_violations=problems,
        )
    return task_count


def job_from_definition(job: JobDefinition) -> dict[str, Any]:
    """The v2 Job spec Terraform would create for a catalog entry."""
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in job.env.items()]
    env += [
        {"name": k, "valueSource": {"secretKeyRef": {"secret": ref.secret, "version": ref.version}}}
        for k, ref in job.secret_env.items()
    ]
    container: dict[str, Any] = {
        "image": job.image,
        "resources": {"limits": {"cpu": job.resources.cpu, "memory": job.resources.memory}},
    }
    if job.command:
        container["command"] = list(job.command)
    if job.args:
        container["args"] = list(job.args)
    if env:
        container["env"] = env
    body = {
        "template": {
            "taskCount": job.task_count,
            "parallelism": job.parallelism,
            "template": {
                "containers": [container],
                "maxRetries": job.max_retries,
                "timeout": to_api_duration(job.timeout_seconds),
            },
        },
    }
    return parse_job(body)


# ---------------------------------------------------------------- paging


def _page_size(raw: Any, *, maximum: int = MAX_LIST_PAGE_SIZE, default: int = DEFAULT_LIST_PAGE_SIZE) -> int:
    if raw in (None, ""):
        return default
    try:
        size = int(raw)
    except (TypeError, ValueError):
        raise invalid("page_size", f"page_size must be an integer, got {raw!r}") from None
    if size < 0:
        raise invalid("page_size", "page_size must not be negative")
    return min(size, maximum) if size else default


def _make_token(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def _token_seq(token: str, kind: str) -> int | None:
    if not token:
        return None
    try:
        got, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if got != kind:
            raise ValueError(got)
        return int(value)
    except ValueError:
        raise invalid("page_token", "invalid page token", "Invalid page token.") from None


def _list_body(key: str, items: list[dict[str, Any]], token: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if items:
        body[key] = items
    if token:
        body["nextPageToken"] = token
    return body
