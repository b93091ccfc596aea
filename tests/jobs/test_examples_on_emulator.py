"""Every example in jobs/*/job.yaml, run on the Cloud Run emulator through the official clients, ends
the way its definition promises: the catalog is built as the controller builds it and the emulator
serves exactly those jobs (the ones Terraform creates from the same files)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import logging as cloud_logging
from google.cloud import run_v2
from google.protobuf import duration_pb2
from google.rpc import code_pb2

from controller.catalog import Catalog, JobDefinition, JobExample
from controller.emulator_jobs import catalog_emulator

PROJECT, REGION = "local-project", "us-central1"
CATALOG = Catalog.from_jobs_dir()
EXAMPLES = [(job, number, example) for job in CATALOG for number, example in enumerate(job.examples)]
# Generous: the slowest example is a timeout of 2 s per attempt, three attempts.
DEADLINE_SECONDS = 60.0


def _options(url: str) -> dict[str, Any]:
    return {
        "credentials": AnonymousCredentials(),
        "transport": "rest",
        "client_options": ClientOptions(api_endpoint=url),
    }


@pytest.fixture(scope="module")
def emu() -> Iterator[Any]:
    with catalog_emulator(CATALOG, project=PROJECT, region=REGION) as server:
        yield server


@pytest.fixture(scope="module")
def clients(emu) -> dict[str, Any]:
    return {
        "jobs": run_v2.JobsClient(**_options(emu.url)),
        "executions": run_v2.ExecutionsClient(**_options(emu.url)),
        "tasks": run_v2.TasksClient(**_options(emu.url)),
        # The Logging client speaks HTTP/JSON (the emulator's protocol) only through its non-gRPC path.
        "logging": cloud_logging.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            _use_grpc=False,
            client_options=ClientOptions(api_endpoint=emu.url),
        ),
    }


def _run(jobs: run_v2.JobsClient, job: JobDefinition, example: JobExample) -> str:
    # An example that lists args (even none) replaces the job's; one that does not keeps them.
    replaces_args = "args" in example.model_fields_set
    container = run_v2.RunJobRequest.Overrides.ContainerOverride(
        args=example.args,
        env=[run_v2.EnvVar(name=k, value=v) for k, v in example.env.items()],
        clear_args=replaces_args and not example.args,
    )
    overrides = run_v2.RunJobRequest.Overrides(container_overrides=[container])
    if example.timeout_seconds is not None:
        overrides.timeout = duration_pb2.Duration(seconds=int(example.timeout_seconds))
    name = f"projects/{PROJECT}/locations/{REGION}/jobs/{job.name}"
    operation = jobs.run_job(request=run_v2.RunJobRequest(name=name, overrides=overrides))
    # The operation's metadata is the execution, known as soon as RunJob returns.
    return str(operation.metadata.name)


@pytest.fixture(scope="module")
def finished(clients) -> dict[tuple[str, int], run_v2.Execution]:
    """Launch every example at once, then poll until all are done or the deadline passes."""
    names = {(job.name, n): _run(clients["jobs"], job, example) for job, n, example in EXAMPLES}
    done: dict[tuple[str, int], run_v2.Execution] = {}
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(done) < len(names) and time.monotonic() < deadline:
        for key, name in names.items():
            if key not in done:
                execution = clients["executions"].get_execution(name=name)
                if execution.completion_time:
                    done[key] = execution
        time.sleep(0.1)
    missing = sorted(set(names) - set(done))
    assert not missing, f"still running after {DEADLINE_SECONDS}s: {missing}"
    return done


def test_the_emulator_serves_exactly_the_catalogs_jobs(clients):
    served = clients["jobs"].list_jobs(parent=f"projects/{PROJECT}/locations/{REGION}")
    by_name = {job.name.rsplit("/", 1)[-1]: job for job in served}
    assert set(by_name) == set(CATALOG.jobs)
    for name, job in by_name.items():
        definition = CATALOG[name]
        task = job.template.template
        assert task.containers[0].image == definition.image
        assert task.max_retries == definition.max_retries
        assert task.timeout.total_seconds() == definition.timeout_seconds
        assert {e.name: e.value for e in task.containers[0].env} == definition.env


def _as_line(payload: Any) -> str:
    # Cloud Run logs a JSON line as jsonPayload; wordcount prints its JSON with sorted keys.
    return json.dumps(payload, sort_keys=True) if isinstance(payload, dict) else str(payload)


def _condition(execution: run_v2.Execution, kind: str) -> run_v2.Condition | None:
    return next((c for c in execution.conditions if c.type_ == kind), None)


@pytest.mark.parametrize(
    ("job", "number", "example"),
    EXAMPLES,
    ids=[f"{job.name}-{number}-{example.outcome}" for job, number, example in EXAMPLES],
)
def test_example_has_the_promised_outcome_on_the_emulator(clients, finished, job, number, example):
    execution = finished[job.name, number]
    tasks = list(clients["tasks"].list_tasks(parent=execution.name))
    assert len(tasks) == 1
    task = tasks[0]
    completed = _condition(execution, "Completed")
    assert completed is not None

    if example.outcome == "succeeded":
        assert execution.succeeded_count == 1
        assert completed.state == run_v2.Condition.State.CONDITION_SUCCEEDED
        assert task.last_attempt_result.exit_code == 0
    else:
        assert execution.failed_count == 1
        assert completed.state == run_v2.Condition.State.CONDITION_FAILED
        # Cloud Run retries a failed or timed-out task until max_retries is used up.
        assert task.retried == job.max_retries
    if example.outcome == "failed":
        assert task.last_attempt_result.status.code != code_pb2.DEADLINE_EXCEEDED
        if example.exit_code is not None:
            assert task.last_attempt_result.exit_code == example.exit_code
    if example.outcome == "timed_out":
        # Stopped at its timeout: no exit code of its own, the attempt's status says why.
        assert task.last_attempt_result.status.code == code_pb2.DEADLINE_EXCEEDED

    if example.output_contains is not None:
        entries = clients["logging"].list_entries(
            resource_names=[f"projects/{PROJECT}"],
            filter_=(
                'resource.type="cloud_run_job" AND '
                f'labels."run.googleapis.com/execution_name"="{execution.name.rsplit("/", 1)[-1]}"'
            ),
        )
        text = "\n".join(_as_line(entry.payload) for entry in entries)
        assert example.output_contains in text


def test_a_packed_execution_runs_each_item_as_one_task(clients, tmp_path):
    """Three items as the three tasks of one execution: the runner picks each task's item."""
    items = [{"key": f"item-{i}", "args": [f"name-{i}"], "env": {"GREETING": f"Hi{i}"}} for i in range(3)]
    for start in (0, 2):  # two chunks of two, to cross a chunk boundary
        chunk = {"schema": "fanout.manifest/v1", "offset": start, "items": items[start : start + 2]}
        (tmp_path / f"{start // 2:05d}.json").write_text(json.dumps(chunk))
    overrides = run_v2.RunJobRequest.Overrides(
        container_overrides=[
            run_v2.RunJobRequest.Overrides.ContainerOverride(
                clear_args=True,
                env=[
                    run_v2.EnvVar(name="FANOUT_MANIFEST", value=str(tmp_path)),
                    run_v2.EnvVar(name="FANOUT_MANIFEST_CHUNK", value="2"),
                ],
            )
        ],
        task_count=3,
    )
    operation = clients["jobs"].run_job(
        request=run_v2.RunJobRequest(name=f"projects/{PROJECT}/locations/{REGION}/jobs/hello", overrides=overrides)
    )
    execution = operation.result(timeout=DEADLINE_SECONDS)

    assert execution.succeeded_count == 3
    entries = clients["logging"].list_entries(
        resource_names=[f"projects/{PROJECT}"],
        filter_=f'labels."run.googleapis.com/execution_name"="{execution.name.rsplit("/", 1)[-1]}"',
    )
    lines = sorted(str(entry.payload) for entry in entries)
    assert lines == [f"[task {i}] Hi{i}, name-{i}!" for i in range(3)]
