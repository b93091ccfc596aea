"""Wire shape checked against the google-cloud-run message types, and a server that survives bad clients."""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import pytest
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import json_format

from cloudrun_emulator import Emulator
from tests.emulator.conftest import FAST_POLL, Clients, wait_until


def _get(url: str, method: str = "GET", body: bytes | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _strict(message: Any, data: Any) -> None:
    """Parse as the message type, rejecting any field name it does not have."""
    target = message.pb(message()) if hasattr(message, "pb") else message()
    json_format.ParseDict(data, target, ignore_unknown_fields=False)


def test_every_resource_state_parses_strictly_as_its_message_type(emu: Emulator, clients: Clients) -> None:
    clients.create_job(
        "shapes",
        "import os, sys, time; time.sleep(float(os.environ.get('S', '0'))); sys.exit(int(sys.argv[1]))",
        task_count=2,
        parallelism=1,
    )
    base = f"{emu.url}/v2/{clients.parent}/jobs/shapes"
    _strict(run_v2.Job, _get(base))
    _strict(run_v2.ListJobsResponse, _get(f"{emu.url}/v2/{clients.parent}/jobs"))

    failing = run_v2.RunJobRequest.Overrides.ContainerOverride(args=["2"])
    failed = clients.run("shapes", container_overrides=[failing])
    running = clients.run(
        "shapes",
        container_overrides=[
            run_v2.RunJobRequest.Overrides.ContainerOverride(args=["0"], env=[run_v2.EnvVar(name="S", value="30")])
        ],
    )
    clients.wait_for(running.metadata.name, lambda e: e.running_count == 1)
    with pytest.raises(Exception, match="exited with an error"):
        failed.result(timeout=20, polling=FAST_POLL)

    for name in (failed.metadata.name, running.metadata.name):
        _strict(run_v2.Execution, _get(f"{emu.url}/v2/{name}"))
        tasks = _get(f"{emu.url}/v2/{name}/tasks")
        _strict(run_v2.ListTasksResponse, tasks)
        assert {t["conditions"][-1]["state"] for t in tasks["tasks"]} <= {
            "CONDITION_FAILED",
            "CONDITION_PENDING",
            "CONDITION_SUCCEEDED",
        }
    _strict(run_v2.ListExecutionsResponse, _get(f"{base}/executions"))
    cancel = _get(f"{emu.url}/v2/{running.metadata.name}:cancel", "POST", b"{}")
    for operation in (cancel, _get(f"{emu.url}/v2/{failed.operation.name}")):
        _strict(operations_pb2.Operation, {k: v for k, v in operation.items() if k not in ("metadata", "response")})
        for key in ("metadata", "response"):
            if key in operation:
                assert operation[key]["@type"] == "type.googleapis.com/google.cloud.run.v2.Execution"
                _strict(run_v2.Execution, {k: v for k, v in operation[key].items() if k != "@type"})
    clients.wait_for(running.metadata.name, lambda e: bool(e.completion_time))
    _strict(run_v2.Execution, _get(f"{emu.url}/v2/{running.metadata.name}"))


def _raw_exchange(emu: Emulator, payload: bytes, *, read: bool = True) -> bytes:
    with socket.create_connection((emu.host, emu.port), timeout=5) as conn:
        conn.sendall(payload)
        if not read:
            return b""
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_server_survives_garbage_and_disconnects(emu: Emulator, clients: Clients) -> None:
    assert _raw_exchange(emu, b"\x00\xff\xfe not http at all\r\n\r\n").startswith(b"HTTP/1.1 400")
    # A body shorter than announced, then a hang-up.
    _raw_exchange(emu, b'POST /v2/entries:list HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"res', read=False)
    # Hang up while the server waits on a long-running operation.
    clients.create_job("sleepy", "import time; time.sleep(30)")
    operation = clients.run("sleepy").operation.name
    _raw_exchange(
        emu,
        (
            f"POST /v2/{operation}:wait HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f'Content-Length: 17\r\n\r\n{{"timeout": "5s"}}'
        ).encode(),
        read=False,
    )
    garbage = _raw_exchange(
        emu,
        b"POST /v2/projects/p/locations/l/jobs?jobId=g HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\n\xff\xfe{[}",
    )
    assert garbage.startswith(b"HTTP/1.1 400")
    assert b'"status":"INVALID_ARGUMENT"' in garbage
    # Still serving, state intact.
    assert _get(f"{emu.url}/_emulator/healthz") == {"status": "ok"}
    assert clients.jobs.get_job(name=f"{clients.parent}/jobs/sleepy").name.endswith("/sleepy")


def test_stats_endpoint_counts_requests_per_method(emu: Emulator, clients: Clients) -> None:
    clients.create_job("counted", "pass")
    clients.run("counted").result(timeout=20, polling=FAST_POLL)
    clients.jobs.get_job(name=f"{clients.parent}/jobs/counted")
    stats = _get(f"{emu.url}/_emulator/stats")
    assert stats["requests"]["Jobs.CreateJob"] == 1
    assert stats["requests"]["Jobs.RunJob"] == 1
    assert stats["requests"]["Jobs.GetJob"] == 1
    assert stats["requests"]["Operations.GetOperation"] >= 1
    assert stats["tasks_started"] == 1
    assert stats["running_tasks"] == 0
    assert stats["requests"] == emu.stats()
    emu.reset_stats()
    assert emu.stats() == {}
    wait_until(lambda: _get(f"{emu.url}/_emulator/stats")["peak_running_tasks"] == 0, what="peak reset")
