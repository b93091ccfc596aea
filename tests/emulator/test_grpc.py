"""The emulator over gRPC, through the official clients' default (gRPC) transport: google-cloud-run's Jobs,
Executions, Tasks and their long-running operations, google-cloud-logging's LoggingServiceV2. Most tests give
the clients a plaintext channel to the emulator's gRPC port; the last runs a program whose clients are
unchanged but for their endpoint and anonymous credentials, against the TLS port. Then the same calls over
REST and gRPC, answer for answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import LoggingServiceV2GrpcTransport
from google.cloud.logging_v2.types import ListLogEntriesRequest, ListLogEntriesResponse
from google.logging.type.log_severity_pb2 import LogSeverity
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2, json_format
from google.rpc import error_details_pb2

from cloudrun_emulator import Emulator, Faults, MethodFaults
from tests.emulator.conftest import FAST_POLL, Clients, wait_until

Overrides = run_v2.RunJobRequest.Overrides
# Task 0 succeeds, task 1 exits 3; each prints a line and a structured one.
# A bound for a hung client process, not a guess at its time (imports alone can take tens of seconds on a
# loaded 2-core machine).
HUNG = 300.0
TASKS = """
import json, os, sys
index = os.environ["CLOUD_RUN_TASK_INDEX"]
print(f"task {index} says {os.environ.get('WORD', '')}", flush=True)
print(json.dumps({"severity": "WARNING", "message": f"task {index} structured"}), flush=True)
sys.exit(3 if index == "1" else 0)
"""


def _logging(emu: Emulator) -> LoggingServiceV2Client:
    return LoggingServiceV2Client(
        transport=LoggingServiceV2GrpcTransport(channel=grpc.insecure_channel(emu.grpc_target))
    )


def _exec_filter(execution: str) -> str:
    return f'resource.type="cloud_run_job" AND labels."run.googleapis.com/execution_name"="{execution}"'


def test_grpc_clients_drive_the_whole_lifecycle(emu: Emulator, grpc_clients: Clients) -> None:
    c = grpc_clients
    job = c.create_job("grpc-job", TASKS, task_count=2)
    assert job.name == f"{c.parent}/jobs/grpc-job"
    assert c.jobs.get_job(name=job.name).etag == job.etag
    c.create_job("grpc-other", "pass")
    pages = list(c.jobs.list_jobs(request=run_v2.ListJobsRequest(parent=c.parent, page_size=1)).pages)
    assert [[j.name.rsplit("/", 1)[-1] for j in p.jobs] for p in pages] == [["grpc-job"], ["grpc-other"]]

    job.template.template.containers[0].env.append(run_v2.EnvVar(name="WORD", value="hello"))
    updated = c.jobs.update_job(job=job).result(timeout=10, polling=FAST_POLL)
    assert updated.generation == job.generation + 1

    # RunJob's operation, polled over google.longrunning.Operations on the same channel, ends with the
    # finished execution; an execution with a failed task is an operation that ended with an error.
    operation = c.run("grpc-job", task_count=2)
    with pytest.raises(exceptions.GoogleAPICallError) as failed:
        operation.result(timeout=20, polling=FAST_POLL)
    assert "task1 failed" in str(failed.value.message)
    name = operation.metadata.name
    execution = c.executions.get_execution(name=name)
    assert (execution.succeeded_count, execution.failed_count, execution.task_count) == (1, 1, 2)
    assert [e.name for e in c.executions.list_executions(parent=job.name)] == [name]
    tasks = c.tasks_of(name)
    assert [(t.index, t.last_attempt_result.exit_code) for t in tasks] == [(0, 0), (1, 3)]
    assert c.tasks.get_task(name=tasks[1].name).last_attempt_result.exit_code == 3

    # The operation mixins of the gRPC transport.
    op_name = operation.operation.name
    assert c.jobs.get_operation(operations_pb2.GetOperationRequest(name=op_name)).done
    waited = c.jobs.wait_operation(
        operations_pb2.WaitOperationRequest(name=op_name, timeout=duration_pb2.Duration(seconds=1))
    )
    # google-cloud-run's gRPC transport declares no deserializer for this mixin: the answer comes back as bytes.
    assert operations_pb2.Operation.FromString(waited).done
    listed = c.jobs.list_operations(operations_pb2.ListOperationsRequest(name=c.parent))
    assert op_name in {op.name for op in listed.operations}
    c.jobs.delete_operation(operations_pb2.DeleteOperationRequest(name=op_name))
    with pytest.raises(exceptions.NotFound):
        c.jobs.get_operation(operations_pb2.GetOperationRequest(name=op_name))

    # Cancelling a running execution, then deleting it and its job.
    c.create_job("grpc-sleeper", "import time; time.sleep(60)")
    running = c.run("grpc-sleeper").metadata.name
    c.wait_for(running, lambda e: e.running_count == 1)
    cancelled = c.executions.cancel_execution(name=running).result(timeout=15, polling=FAST_POLL)
    assert cancelled.cancelled_count == 1
    c.executions.delete_execution(name=running).result(timeout=10, polling=FAST_POLL)
    with pytest.raises(exceptions.NotFound):
        c.executions.get_execution(name=running)
    c.jobs.delete_job(name=f"{c.parent}/jobs/grpc-sleeper").result(timeout=10, polling=FAST_POLL)
    with pytest.raises(exceptions.NotFound):
        c.jobs.get_job(name=f"{c.parent}/jobs/grpc-sleeper")

    # Errors in google.rpc.Status form: the code, the message, the BadRequest details.
    with pytest.raises(exceptions.AlreadyExists):
        c.create_job("grpc-job", "pass")
    with pytest.raises(exceptions.InvalidArgument) as bad:
        c.create_job("Not_A_Name", "pass")
    (detail,) = bad.value.details
    assert isinstance(detail, error_details_pb2.BadRequest)
    assert detail.field_violations[0].field == "job_id"
    with pytest.raises(exceptions.InvalidArgument, match="name"):
        c.jobs.get_job(name="jobs/not-a-job-name")
    with pytest.raises(exceptions.MethodNotImplemented):
        c.jobs.get_iam_policy(request={"resource": job.name})

    stats = emu.stats()
    assert stats["Jobs.RunJob"] == 2
    assert stats["Operations.GetOperation"] >= 1  # the LRO polls
    assert stats["Executions.CancelExecution"] == 1


def test_grpc_logging_lists_task_entries_with_filters_and_pages(emu: Emulator, grpc_clients: Clients) -> None:
    grpc_clients.create_job("grpc-logs", TASKS, task_count=2, env={"WORD": "hi"})
    with pytest.raises(exceptions.GoogleAPICallError):
        grpc_clients.run("grpc-logs").result(timeout=20, polling=FAST_POLL)
    execution = grpc_clients.executions.list_executions(parent=f"{grpc_clients.parent}/jobs/grpc-logs")
    exec_id = next(iter(execution)).name.rsplit("/", 1)[-1]
    logging = _logging(emu)
    request = ListLogEntriesRequest(
        resource_names=[f"projects/{emu.project}"],
        filter=_exec_filter(exec_id) + ' AND labels."run.googleapis.com/task_index"="1"',
        order_by="timestamp asc",
        page_size=1,
    )
    pager = logging.list_log_entries(request=request)
    entries = list(pager)
    assert entries[0].text_payload == "task 1 says hi"
    assert entries[1].json_payload["message"] == "task 1 structured"
    assert entries[1].severity == LogSeverity.WARNING
    assert entries[0].resource.type == "cloud_run_job"
    assert entries[0].resource.labels["job_name"] == "grpc-logs"
    assert entries[0].labels["run.googleapis.com/execution_name"] == exec_id
    assert emu.stats()["Logging.ListLogEntries"] >= 2  # one entry a page
    with pytest.raises(exceptions.InvalidArgument):
        list(logging.list_log_entries(request=ListLogEntriesRequest(filter="x")))


def test_faults_and_field_masks_apply_over_grpc(emu: Emulator, grpc_clients: Clients) -> None:
    c = grpc_clients
    c.create_job("grpc-faults", "pass")
    name = f"{c.parent}/jobs/grpc-faults"
    emu.set_faults(Faults(methods={"Jobs.GetJob": MethodFaults(error_rates={503: 1.0})}))
    with pytest.raises(exceptions.ServiceUnavailable, match="Injected fault"):
        c.jobs.get_job(name=name, retry=None)
    # A lost answer: the execution started, the client heard UNAVAILABLE.
    emu.set_faults(Faults(methods={"Jobs.RunJob": MethodFaults(drop_rate=1.0, drop_mode="close")}))
    with pytest.raises(exceptions.ServiceUnavailable):
        c.jobs.run_job(name=name, retry=None)
    emu.set_faults(Faults())
    assert len(list(c.executions.list_executions(parent=name))) == 1
    assert emu.stats()["Jobs.RunJob"] == 1
    assert emu.stats()["Jobs.GetJob"] == 1

    masked = c.jobs.get_job(name=name, metadata=[("x-goog-fieldmask", "name,etag")])
    assert masked.name == name
    assert masked.etag
    assert not masked.uid
    assert not masked.template.template.containers


# ------------------------------------------------------------------ conformance


def _rest_json(emu: Emulator, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{emu.url}{path}", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _error(call: Callable[[], object]) -> tuple[int | None, str, list[Any]]:
    """An error as both transports can show it: its HTTP code (api-core's classes differ: a 400 over REST is
    BadRequest, INVALID_ARGUMENT over gRPC is InvalidArgument), message and details as JSON."""
    try:
        call()
    except exceptions.GoogleAPICallError as exc:
        details = [
            json_format.MessageToDict(d) if not isinstance(d, dict) else {k: v for k, v in d.items() if k != "@type"}
            for d in exc.details
        ]
        # Over REST, api-core puts the request's method and URL before the server's message.
        message = re.sub(r"^(GET|POST|PATCH|DELETE) \S+: ", "", str(exc.message))
        return exc.code, message, details
    raise AssertionError("the call succeeded")


def test_rest_and_grpc_answer_the_same_calls_alike(emu: Emulator, clients: Clients, grpc_clients: Clients) -> None:
    rest, rpc = clients, grpc_clients
    job = rest.create_job("conform", TASKS, task_count=2, env={"WORD": "both"})
    rest.create_job("conform-2", "pass")
    operation = rest.run("conform")
    execution = operation.metadata.name
    rest.finished(execution)
    exec_id = execution.rsplit("/", 1)[-1]
    wait_until(lambda: emu.task_stats()["running_processes"] == 0, what="the tasks to end")

    def same(call: Callable[[Clients], Any]) -> None:
        a, b = call(rest), call(rpc)
        assert a == b, f"REST answered {a}\n gRPC answered {b}"

    def pages(pager: Any) -> list[Any]:
        return list(pager.pages)

    same(lambda c: c.jobs.get_job(name=job.name))
    same(lambda c: pages(c.jobs.list_jobs(request=run_v2.ListJobsRequest(parent=c.parent, page_size=1))))
    same(lambda c: c.executions.get_execution(name=execution))
    same(lambda c: pages(c.executions.list_executions(parent=job.name)))
    same(lambda c: c.tasks.get_task(name=f"{execution}/tasks/{exec_id}-task1"))
    same(lambda c: pages(c.tasks.list_tasks(request=run_v2.ListTasksRequest(parent=execution, page_size=1))))
    same(lambda c: c.jobs.get_operation(operations_pb2.GetOperationRequest(name=operation.operation.name)))
    same(lambda c: c.jobs.list_operations(operations_pb2.ListOperationsRequest(name=c.parent)))
    same(lambda c: c.jobs.get_job(name=job.name, metadata=[("x-goog-fieldmask", "name,template.taskCount")]))
    masked = "executions(name,succeededCount,failedCount),nextPageToken"
    same(lambda c: pages(c.executions.list_executions(parent=job.name, metadata=[("x-goog-fieldmask", masked)])))

    # Errors: the same exception, message and details.
    same(lambda c: _error(lambda: c.jobs.get_job(name=f"{c.parent}/jobs/missing")))
    same(lambda c: _error(lambda: c.create_job("Not_A_Name", "pass")))
    reserved = Overrides.ContainerOverride(env=[run_v2.EnvVar(name="CLOUD_RUN_TASK_INDEX", value="1")])
    same(lambda c: _error(lambda: c.run("conform", container_overrides=[reserved])))
    same(lambda c: _error(lambda: c.tasks.get_task(name=f"{execution}/tasks/{exec_id}-task9")))
    same(
        lambda c: _error(
            lambda: c.executions.delete_execution(request=run_v2.DeleteExecutionRequest(name=execution, etag='"x"'))
        )
    )

    # Logging: the REST JSON, read as the message, and the gRPC message.
    body = {
        "resourceNames": [f"projects/{emu.project}"],
        "filter": _exec_filter(exec_id),
        "orderBy": "timestamp desc",
        "pageSize": 3,
    }
    over_rest = json_format.ParseDict(_rest_json(emu, "/v2/entries:list", body), ListLogEntriesResponse.pb()())
    over_grpc = _logging(emu).list_log_entries(
        request=ListLogEntriesRequest(
            resource_names=body["resourceNames"], filter=body["filter"], order_by="timestamp desc", page_size=3
        )
    )
    first_page = next(iter(over_grpc.pages))
    assert ListLogEntriesResponse.pb(first_page) == over_rest
    assert len(over_rest.entries) == 3
    assert over_rest.next_page_token


def test_the_grpc_port_is_the_emulators_own(tmp_path: Path) -> None:
    """Two emulators, two gRPC ports, two states; a gRPC port in use is an OSError at start."""
    with Emulator() as one, Emulator() as two:
        assert one.grpc_port != two.grpc_port
        assert one.grpc_port not in (one.port, two.port)
        Clients(one, "grpc").create_job("only-in-one", "pass")
        assert [j.name for j in Clients(two, "grpc").jobs.list_jobs(parent=Clients(two).parent)] == []
        taken = Emulator(grpc_port=one.grpc_port)
        with pytest.raises(OSError, match="gRPC"):
            taken.start()


# A user's program, unchanged but for its endpoint and anonymous credentials: google-cloud-run's and
# google-cloud-logging's default (gRPC, TLS) clients. It trusts the emulator's certificate through gRPC's own
# GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, set in its environment.
UNCHANGED = """
import json, sys
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import logging, run_v2

endpoint, parent, command = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
options = ClientOptions(api_endpoint=endpoint)
jobs = run_v2.JobsClient(credentials=AnonymousCredentials(), client_options=options)
tasks = run_v2.TasksClient(credentials=AnonymousCredentials(), client_options=options)
container = run_v2.Container(image="example.com/unchanged:1", command=command)
job = run_v2.Job(template=run_v2.ExecutionTemplate(task_count=2, template=run_v2.TaskTemplate(containers=[container])))
created = jobs.create_job(parent=parent, job=job, job_id="unchanged").result(timeout=30)
execution = jobs.run_job(name=created.name).result(timeout=60)
codes = [t.last_attempt_result.exit_code for t in tasks.list_tasks(parent=execution.name)]
client = logging.Client(project=parent.split("/")[1], credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": endpoint})
flt = f'labels."run.googleapis.com/execution_name"="{execution.name.rsplit("/", 1)[-1]}"'
lines = sorted(str(e.payload) for e in client.list_entries(filter_=flt))
print(json.dumps({"transport": jobs.transport.kind, "logging": type(client.logging_api).__module__,
                  "succeeded": execution.succeeded_count, "codes": codes, "lines": lines}))
"""


def test_unchanged_default_clients_reach_the_tls_grpc_port() -> None:
    with Emulator(grpc_tls_port=0) as emu:
        env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": emu.grpc_roots_file}
        parent = f"projects/{emu.project}/locations/{emu.region}"
        command = json.dumps([sys.executable, "-c", "import os; print('task', os.environ['CLOUD_RUN_TASK_INDEX'])"])
        ran = subprocess.run(
            [sys.executable, "-c", UNCHANGED, emu.grpc_tls_target, parent, command],
            env=env,
            capture_output=True,
            text=True,
            timeout=HUNG,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        stats = emu.stats()
        roots = Path(emu.grpc_roots_file)
        assert "CERTIFICATE" in roots.read_text()
        assert "PRIVATE KEY" not in roots.read_text()  # the key stays in the emulator's memory
    assert not roots.exists()
    out = json.loads(ran.stdout)
    assert out["transport"] == "grpc"
    assert out["logging"] == "google.cloud.logging_v2._gapic"  # its gRPC API, not the HTTP one
    assert (out["succeeded"], out["codes"]) == (2, [0, 0])
    assert out["lines"] == ["task 0", "task 1"]
    assert stats["Jobs.RunJob"] == 1
    assert stats["Logging.ListLogEntries"] == 1
