"""The emulated Cloud Run Admin API v2 methods: validation, the registry, the scheduler and rendering put
together, one method per RPC. Takes request values, returns v2 JSON; the HTTP layer is elsewhere.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import weakref
from collections.abc import Iterable, Iterator, Mapping

from google.protobuf import json_format

from cloudrun_emulator import limits, render
from cloudrun_emulator.errors import ApiError, invalid
from cloudrun_emulator.faults import FaultInjector
from cloudrun_emulator.logstore import LogStore
from cloudrun_emulator.records import EXECUTION_TYPE, JOB_TYPE, Execution, JobSeed, Operation, Task, Wire
from cloudrun_emulator.registry import Registry, parent_name
from cloudrun_emulator.runtime import TaskRuntime
from cloudrun_emulator.scheduler import Scheduler
from cloudrun_emulator.timefmt import rfc3339
from cloudrun_emulator.validation import (
    OPERATIONS_MAX_PAGE_SIZE,
    apply_overrides,
    check_etag,
    make_token,
    page_size,
    parse_job,
    parse_run_request,
    token_position,
)

log = logging.getLogger("cloudrun_emulator")

MAX_WAIT_SECONDS = 60.0
# The name segment ListExecutions and ListTasks take for "every job" / "every execution" (execution.proto,
# task.proto: 'To list all Tasks across Executions of a Job, use "-" instead of Execution name').
WILDCARD = "-"
_ACROSS = "tasks-across"  # the kind of a ListTasks page token over several executions
_SPAN = limits.MAX_TASKS_PER_EXECUTION  # task indexes are below it, so seq * _SPAN + index is one position


class CloudRunService:
    """Jobs, executions, tasks and operations of one emulator instance, plus its task log store."""

    def __init__(
        self,
        *,
        project: str,
        region: str,
        jobs: Iterable[JobSeed],
        local_images: Mapping[str, list[str]],
        secrets: Mapping[str, str],
        max_running_tasks: int | None,
        use_docker: bool,
        faults: FaultInjector,
        logs: LogStore,
        kill_grace_seconds: float,
        simulate: bool = False,
        local_buckets: Mapping[str, str] | None = None,
    ) -> None:
        self.faults = faults
        self.logs = logs
        self.registry = Registry()
        self.runtime = TaskRuntime(
            local_images=local_images,
            secrets=secrets,
            use_docker=use_docker,
            faults=faults,
            logs=logs,
            kill_grace_seconds=kill_grace_seconds,
            simulate=simulate,
            local_buckets=local_buckets,
        )
        self.scheduler = Scheduler(self.runtime, max_running_tasks)
        self._renders: weakref.WeakKeyDictionary[Execution, tuple[tuple[int, int], Wire]] = (
            weakref.WeakKeyDictionary()
        )
        for seed in jobs:
            body = json_format.MessageToDict(type(seed.job).pb(seed.job), preserving_proto_field_name=False)
            self.registry.add_job(project, region, seed.job_id, parse_job(body))

    # ------------------------------------------------------------------ jobs

    def create_job(self, project: str, location: str, job_id: str, body: object, validate_only: bool) -> Wire:
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
        if self.registry.find_job(project, location, job_id) is not None:
            raise ApiError("ALREADY_EXISTS", f"Resource '{job_id}' already exists.")
        if validate_only:
            name = f"{parent_name(project, location)}/jobs/{job_id}"
            return self._done(project, location, render.job_preview(name, spec.wire))
        job = self.registry.add_job(project, location, job_id, spec)
        return self._done(project, location, render.job(job))

    def get_job(self, project: str, location: str, job_id: str) -> Wire:
        return render.job(self.registry.job(project, location, job_id))

    def update_job(
        self, project: str, location: str, job_id: str, body: object, allow_missing: bool, validate_only: bool
    ) -> Wire:
        """UpdateJob: replaces the job's spec; with allow_missing, creates it."""
        spec = parse_job(body)
        job = self.registry.find_job(project, location, job_id)
        if job is None:
            if not allow_missing:
                self.registry.job(project, location, job_id)  # raises NOT_FOUND
            return self.create_job(project, location, job_id, body, validate_only)
        check_etag(body.get("etag") if isinstance(body, dict) else None, render.job_etag(job), f"job '{job_id}'")
        if validate_only:
            return self._done(project, location, render.job_preview(job.name, spec.wire))
        self.registry.replace_spec(job, spec)
        return self._done(project, location, render.job(job))

    def delete_job(self, project: str, location: str, job_id: str, etag: str, validate_only: bool) -> Wire:
        """DeleteJob: removes the job and its executions, stopping any still running."""
        job = self.registry.job(project, location, job_id)
        check_etag(etag, render.job_etag(job), f"job '{job_id}'")
        rendered = render.job(job)
        if validate_only:
            return self._done(project, location, rendered)
        for execution in job.executions:
            self.scheduler.cancel(execution)
        self.registry.remove_job(job)
        rendered["deleteTime"] = rfc3339(self.registry.clock())
        return self._done(project, location, rendered)

    def list_jobs(self, project: str, location: str, size: object, token: str) -> Wire:
        """ListJobs, in creation order."""
        limit = page_size(size)
        after = token_position(token, "jobs") or 0
        visible = self._created_by("Jobs.ListJobs")
        jobs = (j for j in self.registry.jobs_after(project, location, after) if j.create_time <= visible)
        chosen = list(itertools.islice(jobs, limit + 1))
        next_token = make_token("jobs", chosen[limit - 1].seq) if len(chosen) > limit else ""
        return render.list_body("jobs", [render.job(job) for job in chosen[:limit]], next_token)

    def _done(self, project: str, location: str, response: Wire, type_url: str = JOB_TYPE) -> Wire:
        return render.operation(self.registry.add_operation(project, location, response=response, type_url=type_url))

    # ------------------------------------------------------------ executions

    def run_job(self, project: str, location: str, job_id: str, body: object) -> Wire:
        """RunJob: starts an execution and returns its operation, done when the execution finishes."""
        job = self.registry.job(project, location, job_id)
        request = parse_run_request(body)
        check_etag(request.get("etag"), render.job_etag(job), f"job '{job_id}'")
        template, task_count = apply_overrides(job.spec.task, request.get("overrides") or {}, job.spec.task_count)
        if request.get("validateOnly"):
            preview = render.execution_preview(job_id, template.wire, task_count)
            op = self.registry.add_operation(project, location, response=preview, type_url=EXECUTION_TYPE, keep=False)
            return render.operation(op)
        execution = self.registry.add_execution(job, template, task_count)
        op = self.registry.add_operation(project, location, execution=execution)
        if self.faults.execution_stuck():
            log.debug("fault: execution %s stays pending", execution.name)
        else:
            self.scheduler.start(execution)
        return render.operation(op)

    def get_execution(self, project: str, location: str, job_id: str, exec_id: str) -> Wire:
        return self._rendered(self.registry.execution(project, location, job_id, exec_id))

    def list_executions(self, project: str, location: str, job_id: str, size: object, token: str) -> Wire:
        """ListExecutions of one job, or of every job of the location for job ``-``; newest first (as Cloud
        Run orders them)."""
        executions = self._executions_of(project, location, job_id)
        limit = page_size(size)
        before = token_position(token, "executions")
        visible = self._created_by("Executions.ListExecutions")
        if executions and executions[-1].create_time > visible:
            executions = [e for e in executions if e.create_time <= visible]
        end = len(executions)
        if before:
            end = bisect.bisect_left(executions, before, key=lambda e: e.seq)
        page = [self._rendered(e) for e in reversed(executions[max(0, end - limit) : end])]
        next_token = make_token("executions", executions[end - limit].seq) if end > limit else ""
        return render.list_body("executions", page, next_token)

    def _executions_of(self, project: str, location: str, job_id: str) -> list[Execution]:
        """A job's executions, or the location's for the documented wildcard job ``-``; oldest first."""
        if job_id == WILDCARD:
            return self.registry.executions_in(project, location)
        return self.registry.job(project, location, job_id).executions

    def _rendered(self, ex: Execution) -> Wire:
        """``render.execution``, kept until the execution (or its job) changes: a poll lists every execution of
        a job, most of them unchanged since the last list. What it returns is shared: never change it."""
        version = (ex.version, ex.job.generation)
        kept = self._renders.get(ex)
        if kept is None or kept[0] != version:
            kept = (version, render.execution(ex))
            self._renders[ex] = kept
        return kept[1]

    def cancel_execution(self, project: str, location: str, job_id: str, exec_id: str, body: object) -> Wire:
        """CancelExecution: stops the tasks; the operation is done once they are all gone."""
        execution = self.registry.execution(project, location, job_id, exec_id)
        fields = body if isinstance(body, dict) else {}
        check_etag(fields.get("etag"), render.execution_etag(execution), f"execution '{exec_id}'")
        op = self.registry.add_operation(project, location, execution=execution)
        if not fields.get("validateOnly"):
            self.scheduler.cancel(execution)
        return render.operation(op)

    def delete_execution(
        self, project: str, location: str, job_id: str, exec_id: str, etag: str, validate_only: bool
    ) -> Wire:
        """DeleteExecution: stops what still runs and removes the execution."""
        execution = self.registry.execution(project, location, job_id, exec_id)
        check_etag(etag, render.execution_etag(execution), f"execution '{exec_id}'")
        if not validate_only:
            self.scheduler.cancel(execution)
            self.registry.remove_execution(execution)
        rendered = render.execution(execution)
        rendered["deleteTime"] = rfc3339(self.registry.clock())
        return self._done(project, location, rendered, EXECUTION_TYPE)

    # ----------------------------------------------------------------- tasks

    def get_task(self, project: str, location: str, job_id: str, exec_id: str, task_id: str) -> Wire:
        execution, task = self.registry.task(project, location, job_id, exec_id, task_id)
        return render.task(execution, task)

    def list_tasks(self, project: str, location: str, job_id: str, exec_id: str, size: object, token: str) -> Wire:
        """ListTasks of one execution, by index; with the documented wildcard ``-`` for the execution (or the
        job), of every execution of the job (or of the location)."""
        if WILDCARD in (job_id, exec_id):
            return self._list_tasks_across(project, location, job_id, exec_id, size, token)
        execution = self.registry.execution(project, location, job_id, exec_id)
        limit = page_size(size)
        start = token_position(token, "tasks") or 0
        # Tasks are created with their execution.
        tasks = execution.tasks if execution.create_time <= self._created_by("Tasks.ListTasks") else []
        chunk = tasks[start : start + limit]
        next_token = make_token("tasks", start + limit) if start + limit < len(tasks) else ""
        return render.list_body("tasks", [render.task(execution, t) for t in chunk], next_token)

    def _list_tasks_across(
        self, project: str, location: str, job_id: str, exec_id: str, size: object, token: str
    ) -> Wire:
        """Tasks of several executions: newest execution first (as ListExecutions), each by index. A page
        token is the next task's position, its execution's ``seq`` and its index in one number."""
        limit = page_size(size)
        start = token_position(token, _ACROSS)
        after_seq, first_index = divmod(start, _SPAN) if start is not None else (None, 0)
        visible = self._created_by("Tasks.ListTasks")

        def tasks() -> Iterator[tuple[Execution, Task]]:
            for ex in reversed(self._executions_of(project, location, job_id)):
                if exec_id not in (WILDCARD, ex.exec_id) or ex.create_time > visible:
                    continue
                if after_seq is not None and ex.seq > after_seq:
                    continue
                skip = first_index if ex.seq == after_seq else 0
                yield from ((ex, task) for task in ex.tasks[skip:])

        chosen = list(itertools.islice(tasks(), limit + 1))
        next_token = ""
        if len(chosen) > limit:
            ex, task = chosen[limit]
            next_token = make_token(_ACROSS, ex.seq * _SPAN + task.index)
        return render.list_body("tasks", [render.task(ex, task) for ex, task in chosen[:limit]], next_token)

    # ------------------------------------------------------------ operations

    def get_operation(self, project: str, location: str, op_id: str) -> Wire:
        return render.operation(self.registry.operation(project, location, op_id))

    async def wait_operation(self, project: str, location: str, op_id: str, timeout: float) -> Wire:
        """WaitOperation: the operation once done, or as it is when the timeout passes."""
        op: Operation = self.registry.operation(project, location, op_id)
        if op.execution is not None and not op.execution.finished:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(op.execution.done.wait(), min(timeout, MAX_WAIT_SECONDS))
        return render.operation(op)

    def list_operations(self, project: str, location: str, size: object, token: str) -> Wire:
        """ListOperations of one location, oldest first."""
        limit = page_size(size, maximum=OPERATIONS_MAX_PAGE_SIZE, default=OPERATIONS_MAX_PAGE_SIZE)
        after = token_position(token, "operations") or 0
        visible = self._created_by("Operations.ListOperations")
        ops = (op for op in self.registry.operations_after(project, location, after) if op.create_time <= visible)
        chosen = list(itertools.islice(ops, limit + 1))
        next_token = make_token("operations", chosen[limit - 1].seq) if len(chosen) > limit else ""
        return render.list_body("operations", [render.operation(op) for op in chosen[:limit]], next_token)

    def delete_operation(self, project: str, location: str, op_id: str) -> Wire:
        """DeleteOperation: forgets the operation (not the execution behind it)."""
        self.registry.remove_operation(self.registry.operation(project, location, op_id))
        return {}

    def _created_by(self, rpc: str) -> float:
        """The newest creation time a List answer shows: now, or earlier when the list is made to lag."""
        return self.registry.clock() - self.faults.list_lag(rpc)

    # --------------------------------------------------------------- control

    def task_stats(self) -> dict[str, int]:
        """Counters about task processes, for tests and benchmarks."""
        counters = self.scheduler.counters
        return {
            "tasks_started": counters.tasks_started,
            "attempts_started": self.runtime.attempts_started,
            "running_tasks": counters.running_tasks,
            "running_processes": self.runtime.procs.running,
            "peak_running_tasks": counters.peak_running,
            "executions_started": counters.executions_started,
            "log_entries": len(self.logs),
            "volume_objects_fetched": self.runtime.volumes.objects_fetched,
        }

    def reset_peak(self) -> None:
        self.scheduler.counters.peak_running = self.scheduler.counters.running_tasks

    async def shutdown(self) -> None:
        """Kill every task process group and finish every execution."""
        await self.scheduler.shutdown(self.registry.executions())
