"""Emulator fixtures: a fresh emulator per test and the official Google clients pointed at it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.api_core.client_options import ClientOptions
from google.api_core.future import polling
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport
from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport
from google.cloud.run_v2.services.tasks.transports import TasksGrpcTransport

from cloudrun_emulator import Emulator

PY = sys.executable
# Clients poll operations from 1 s up; tests poll faster so they finish in well under a second each.
FAST_POLL = polling.DEFAULT_POLLING.with_delay(initial=0.05, maximum=0.2, multiplier=1.5)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(kill_grace_seconds=0.2) as emulator:
        yield emulator


class Clients:
    """The three Cloud Run v2 clients, anonymous credentials, endpoint at the emulator: REST transport, or the
    clients' default gRPC transport over a plaintext channel to the emulator's gRPC port."""

    def __init__(self, emulator: Emulator, transport: str = "rest") -> None:
        if transport == "rest":
            kwargs: dict[str, Any] = {
                "credentials": AnonymousCredentials(),
                "transport": "rest",
                "client_options": ClientOptions(api_endpoint=emulator.url),
            }
            self.jobs = run_v2.JobsClient(**kwargs)
            self.executions = run_v2.ExecutionsClient(**kwargs)
            self.tasks = run_v2.TasksClient(**kwargs)
        else:
            channel = grpc.insecure_channel(emulator.grpc_target)
            self.jobs = run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel))
            self.executions = run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel))
            self.tasks = run_v2.TasksClient(transport=TasksGrpcTransport(channel=channel))
        self.parent = f"projects/{emulator.project}/locations/{emulator.region}"

    def create_job(
        self,
        job_id: str,
        code: str,
        *,
        task_count: int = 1,
        parallelism: int = 0,
        max_retries: int = 0,
        timeout: str = "30s",
        env: dict[str, str] | None = None,
    ) -> run_v2.Job:
        """A job whose container runs ``python -c code``."""
        container = run_v2.Container(
            image="example.com/test:latest",
            command=[PY, "-c", code],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in (env or {}).items()],
        )
        job = run_v2.Job(
            template=run_v2.ExecutionTemplate(
                task_count=task_count,
                parallelism=parallelism,
                template=run_v2.TaskTemplate(containers=[container], max_retries=max_retries, timeout=timeout),
            )
        )
        return self.jobs.create_job(parent=self.parent, job=job, job_id=job_id).result(timeout=10, polling=FAST_POLL)

    def run(self, job_id: str, **overrides: Any) -> Any:
        """Start an execution; returns the RunJob operation."""
        request = run_v2.RunJobRequest(name=f"{self.parent}/jobs/{job_id}")
        if overrides:
            request.overrides = run_v2.RunJobRequest.Overrides(**overrides)
        return self.jobs.run_job(request=request)

    def wait_for(
        self, name: str, predicate: Callable[[run_v2.Execution], bool], timeout: float = 15.0
    ) -> run_v2.Execution:
        """Poll GetExecution until the predicate holds, failing the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            execution = self.executions.get_execution(name=name)
            if predicate(execution):
                return execution
            if time.monotonic() > deadline:
                raise AssertionError(f"execution never reached the expected state: {execution}")
            time.sleep(0.05)

    def finished(self, name: str, timeout: float = 15.0) -> run_v2.Execution:
        """The execution once it has a completion time."""
        return self.wait_for(name, lambda e: bool(e.completion_time), timeout)

    def tasks_of(self, execution: str) -> list[run_v2.Task]:
        return list(self.tasks.list_tasks(parent=execution))


@pytest.fixture
def clients(emu: Emulator) -> Clients:
    return Clients(emu)


@pytest.fixture
def grpc_clients(emu: Emulator) -> Clients:
    return Clients(emu, transport="grpc")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a condition with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
