"""The resources the emulator holds: jobs, their executions and tasks, and long-running operations.

Pure state: create, find, page through and remove records. Nothing here knows HTTP or the wire format, and
all of it runs on the emulator's event loop, so there are no locks.
"""

from __future__ import annotations

import bisect
import itertools
import random
import string
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

from cloudrun_emulator.errors import ApiError, not_found
from cloudrun_emulator.records import JOB_TYPE, Execution, Job, JobSpec, Operation, Task, TaskTemplate, Wire

Clock = Callable[[], float]


def parent_name(project: str, location: str) -> str:
    return f"projects/{project}/locations/{location}"


class Registry:
    """Every record, indexed by name, in creation order (``seq``) for paging."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self._seq = itertools.count(1)
        self._rng = random.Random()  # noqa: S311 - execution name suffixes, not secrets
        self._jobs: dict[str, Job] = {}
        self._job_order: list[Job] = []
        self._executions: dict[str, Execution] = {}
        self._operations: dict[str, Operation] = {}
        self._op_order: list[Operation] = []

    # ------------------------------------------------------------------ jobs

    def add_job(self, project: str, location: str, job_id: str, spec: JobSpec) -> Job:
        name = f"{parent_name(project, location)}/jobs/{job_id}"
        if name in self._jobs:
            raise ApiError("ALREADY_EXISTS", f"Resource '{job_id}' already exists.")
        now = self.clock()
        job = Job(name, project, location, job_id, str(uuid.uuid4()), spec, now, next(self._seq), now)
        self._jobs[name] = job
        self._job_order.append(job)
        return job

    def find_job(self, project: str, location: str, job_id: str) -> Job | None:
        return self._jobs.get(f"{parent_name(project, location)}/jobs/{job_id}")

    def job(self, project: str, location: str, job_id: str) -> Job:
        job = self.find_job(project, location, job_id)
        if job is None:
            raise not_found("JOB", job_id)
        return job

    def replace_spec(self, job: Job, spec: JobSpec) -> None:
        job.spec = spec
        job.generation += 1
        job.update_time = self.clock()

    def remove_job(self, job: Job) -> None:
        for execution in list(job.executions):
            self.remove_execution(execution)
        del self._jobs[job.name]
        self._job_order.remove(job)

    def jobs_after(self, project: str, location: str, after: int) -> Iterator[Job]:
        """Jobs of one location created after position ``after``, oldest first."""
        prefix = parent_name(project, location) + "/"
        start = bisect.bisect_right(self._job_order, after, key=lambda j: j.seq)
        return (job for job in itertools.islice(self._job_order, start, None) if job.name.startswith(prefix))

    # ------------------------------------------------------------ executions

    def add_execution(self, job: Job, template: TaskTemplate, task_count: int) -> Execution:
        while True:
            suffix = "".join(self._rng.choice(string.ascii_lowercase + string.digits) for _ in range(5))
            exec_id = f"{job.job_id}-{suffix}"
            name = f"{job.name}/executions/{exec_id}"
            if name not in self._executions:
                break
        spec = job.spec
        execution = Execution(
            name=name,
            exec_id=exec_id,
            job=job,
            uid=str(uuid.uuid4()),
            seq=next(self._seq),
            create_time=self.clock(),
            task_count=task_count,
            # Cloud Run runs as many tasks at once as it can when the job leaves parallelism at 0, and the
            # execution reports the number it used.
            parallelism=min(spec.parallelism or task_count, task_count),
            template=template,
            labels={**spec.labels, **spec.execution_labels},
            annotations=dict(spec.execution_annotations),
        )
        execution.tasks = [
            Task(index=i, name=f"{name}/tasks/{exec_id}-task{i}", uid=str(uuid.uuid4())) for i in range(task_count)
        ]
        self._executions[name] = execution
        job.executions.append(execution)
        job.execution_count += 1
        return execution

    def execution(self, project: str, location: str, job_id: str, exec_id: str) -> Execution:
        name = f"{parent_name(project, location)}/jobs/{job_id}/executions/{exec_id}"
        execution = self._executions.get(name)
        if execution is None:
            raise not_found("EXECUTION", exec_id)
        return execution

    def executions(self) -> Iterable[Execution]:
        return self._executions.values()

    def executions_in(self, project: str, location: str) -> list[Execution]:
        """Every execution of a location's jobs, oldest first (creation order is ``seq`` order)."""
        prefix = parent_name(project, location) + "/"
        return [e for e in self._executions.values() if e.name.startswith(prefix)]

    def remove_execution(self, execution: Execution) -> None:
        self._executions.pop(execution.name, None)
        siblings = execution.job.executions
        index = bisect.bisect_left(siblings, execution.seq, key=lambda e: e.seq)
        if index < len(siblings) and siblings[index] is execution:
            siblings.pop(index)

    # ----------------------------------------------------------------- tasks

    def task(self, project: str, location: str, job_id: str, exec_id: str, task_id: str) -> tuple[Execution, Task]:
        execution = self.execution(project, location, job_id, exec_id)
        number = task_id.removeprefix(f"{exec_id}-task")
        if number != task_id and number.isdigit() and str(int(number)) == number and int(number) < execution.task_count:
            return execution, execution.tasks[int(number)]
        raise not_found("TASK", task_id)

    # ------------------------------------------------------------ operations

    def add_operation(
        self,
        project: str,
        location: str,
        *,
        execution: Execution | None = None,
        response: Wire | None = None,
        type_url: str = JOB_TYPE,
        keep: bool = True,
    ) -> Operation:
        name = f"{parent_name(project, location)}/operations/{uuid.uuid4()}"
        operation = Operation(name, next(self._seq), self.clock(), execution, response, type_url)
        if keep:
            self._operations[name] = operation
            self._op_order.append(operation)
        return operation

    def operation(self, project: str, location: str, op_id: str) -> Operation:
        operation = self._operations.get(f"{parent_name(project, location)}/operations/{op_id}")
        if operation is None:
            raise not_found("OPERATION", op_id)
        return operation

    def operations_after(self, project: str, location: str, after: int) -> Iterator[Operation]:
        """Operations of one location created after position ``after``, oldest first."""
        prefix = parent_name(project, location) + "/"
        start = bisect.bisect_right(self._op_order, after, key=lambda o: o.seq)
        return (op for op in itertools.islice(self._op_order, start, None) if op.name.startswith(prefix))

    def remove_operation(self, operation: Operation) -> None:
        del self._operations[operation.name]
        self._op_order.remove(operation)
