"""Typed records of the emulated resources: jobs, executions, tasks and operations.

A job's spec is kept twice: as the normalised v2 JSON the client sent (what GetJob answers, so unknown-to-us
but valid fields survive a round trip) and as typed values the scheduler and the task runtime read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from google.cloud import run_v2

Wire = dict[str, Any]
"""A resource in the v2 JSON shape (camelCase field names, enum names), as json.dumps sends it."""

EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
JOB_TYPE = "type.googleapis.com/google.cloud.run.v2.Job"


class State(StrEnum):
    """Where an execution or a task is; the last three are final."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


@dataclass(frozen=True)
class SecretRef:
    """A Secret Manager secret version an environment variable takes its value from."""

    secret: str
    version: str


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str = ""
    secret: SecretRef | None = None


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str


@dataclass(frozen=True)
class GcsVolume:
    """A Cloud Storage bucket mounted as a volume (``Volume.gcs``); ``only_dir`` and ``implicit_dirs`` from its
    ``only-dir=`` and ``implicit-dirs`` mount options."""

    name: str
    bucket: str
    read_only: bool = False
    only_dir: str = ""
    implicit_dirs: bool = False


@dataclass(frozen=True)
class Container:
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    working_dir: str = ""
    volume_mounts: tuple[VolumeMount, ...] = ()


@dataclass(frozen=True)
class TaskTemplate:
    """What every task of an execution runs; ``wire`` is its v2 JSON (``TaskTemplate``)."""

    containers: tuple[Container, ...]
    max_retries: int
    timeout_seconds: float
    wire: Wire
    gcs_volumes: tuple[GcsVolume, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    """A validated job: the typed values the emulator acts on, and the v2 JSON it answers with."""

    task_count: int
    parallelism: int
    labels: dict[str, str]
    execution_labels: dict[str, str]
    execution_annotations: dict[str, str]
    task: TaskTemplate
    wire: Wire


@dataclass(frozen=True)
class JobSeed:
    """A job that exists when the emulator starts, as Terraform would have created it."""

    job_id: str
    job: run_v2.Job


@dataclass(eq=False)
class Job:
    name: str
    project: str
    location: str
    job_id: str
    uid: str
    spec: JobSpec
    create_time: float
    seq: int
    update_time: float
    generation: int = 1
    executions: list[Execution] = field(default_factory=list)
    execution_count: int = 0


@dataclass(eq=False)
class Task:
    index: int
    name: str
    uid: str
    state: State = State.PENDING
    attempt: int = 0
    retried: int = 0
    start_time: float | None = None
    scheduled_time: float | None = None
    completion_time: float | None = None
    exit_code: int | None = None
    status_code: str = "OK"
    status_message: str = ""
    never_started: bool = False  # its container could not start (no exit code; conditions say why)
    reason: str = ""  # a Condition.CommonReason name for the failure, when one applies
    pid: int | None = None
    version: int = 1


@dataclass(eq=False)
class Execution:
    name: str
    exec_id: str
    job: Job
    uid: str
    seq: int
    create_time: float
    task_count: int
    parallelism: int
    template: TaskTemplate
    labels: dict[str, str]
    annotations: dict[str, str]
    tasks: list[Task] = field(default_factory=list)
    state: State = State.PENDING
    start_time: float | None = None
    completion_time: float | None = None
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    cancelling: bool = False
    first_failure: str = ""
    first_failure_reason: str = ""
    version: int = 1
    driver: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.state.final


@dataclass(eq=False)
class Operation:
    """A long-running operation: follows a live execution, or was done at once with a fixed response."""

    name: str
    seq: int
    create_time: float
    execution: Execution | None = None
    response: Wire | None = None
    type_url: str = JOB_TYPE
