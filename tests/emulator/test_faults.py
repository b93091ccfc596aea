"""Fault injection: seeded error answers, latency, lost answers, killed tasks, executions that never start."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions
from pydantic import ValidationError

from cloudrun_emulator import Emulator, Faults, MethodFaults
from tests.emulator.conftest import FAST_POLL, Clients, wait_until

SLEEPER = "import sys, time; time.sleep(5)"


def _status(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _answers(emulator: Emulator, path: str, n: int) -> list[tuple[int, Any]]:
    return [_status(emulator.url + path) for _ in range(n)]


def test_error_rates_are_per_method_seeded_and_reproducible(emu: Emulator, clients: Clients) -> None:
    clients.create_job("target", "pass")
    job_path = f"/v2/{clients.parent}/jobs/target"
    faults = Faults(seed=7, methods={"Jobs.GetJob": MethodFaults(error_rates={503: 0.3, 429: 0.2})})
    emu.set_faults(faults)
    first = _answers(emu, job_path, 60)
    assert {status for status, _ in first} == {200, 429, 503}
    unavailable = next(body for status, body in first if status == 503)
    assert unavailable["error"]["code"] == 503
    assert unavailable["error"]["status"] == "UNAVAILABLE"
    exhausted = next(body for status, body in first if status == 429)
    assert exhausted["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert [status for status, _ in _answers(emu, f"/v2/{clients.parent}/jobs", 10)] == [200] * 10
    emu.set_faults(faults)  # same seed: the same answers again
    assert [s for s, _ in _answers(emu, job_path, 60)] == [s for s, _ in first]
    assert emu.stats()["Jobs.GetJob"] == 120


def test_emulator_endpoints_never_see_faults(emu: Emulator) -> None:
    # A latency far above what two local requests take even on a loaded machine: had either call been
    # delayed, the pair would take at least twice that.
    latency = 3.0
    emu.set_faults(Faults(default=MethodFaults(error_rates={500: 1.0}, latency_seconds=latency)))
    started = time.monotonic()
    assert _status(f"{emu.url}/_emulator/stats")[0] == 200
    assert _status(f"{emu.url}/_emulator/faults")[0] == 200
    assert time.monotonic() - started < latency
    status, body = _status(f"{emu.url}/v2/projects/p/locations/l/jobs")
    assert (status, body["error"]["status"]) == (500, "INTERNAL")


def test_latency_is_added(emu: Emulator) -> None:
    emu.set_faults(Faults(methods={"Jobs.*": MethodFaults(latency_seconds=0.3)}))
    started = time.monotonic()
    assert _status(f"{emu.url}/v2/projects/p/locations/l/jobs")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_answer_lost_after_run_job_acted(emu: Emulator, clients: Clients) -> None:
    clients.create_job("dropped", "pass")
    parent = f"{clients.parent}/jobs/dropped"
    emu.set_faults(Faults(methods={"Jobs.RunJob": MethodFaults(drop_rate=1.0, drop_mode="503")}))
    with pytest.raises(exceptions.ServiceUnavailable):
        clients.run("dropped")
    emu.set_faults(Faults(methods={"Jobs.RunJob": MethodFaults(drop_rate=1.0, drop_mode="close")}))
    with pytest.raises(requests.exceptions.ConnectionError):
        clients.run("dropped")
    emu.set_faults(Faults())
    # The client saw two errors, yet both executions exist (and ran): a blind retry would start a third.
    executions = list(clients.executions.list_executions(parent=parent))
    assert len(executions) == 2
    for execution in executions:
        assert clients.finished(execution.name).succeeded_count == 1


def test_tasks_killed_mid_run_fail_with_sigkill_exit_code_and_retry(emu: Emulator, clients: Clients) -> None:
    emu.set_faults(Faults(task_kill_rate=1.0, task_kill_delay_seconds=(0.1, 0.2)))
    clients.create_job("victim", SLEEPER, max_retries=1)
    operation = clients.run("victim")
    with pytest.raises(exceptions.FailedPrecondition):
        operation.result(timeout=20, polling=FAST_POLL)
    (task,) = clients.tasks_of(operation.metadata.name)
    assert task.last_attempt_result.exit_code == 137
    assert task.retried == 1
    assert emu.task_stats()["attempts_started"] == 2


def test_stuck_execution_never_starts_until_cancelled(emu: Emulator, clients: Clients) -> None:
    emu.set_faults(Faults(stuck_execution_rate=1.0))
    clients.create_job("stuck", "pass", task_count=3)
    name = clients.run("stuck").metadata.name
    # Nothing to wait for: the point is that nothing happens, so give it a moment to misbehave.
    time.sleep(0.3)
    execution = clients.executions.get_execution(name=name)
    assert not execution.start_time
    assert (execution.running_count, execution.succeeded_count) == (0, 0)
    assert emu.task_stats()["tasks_started"] == 0
    cancelled = clients.executions.cancel_execution(name=name).result(timeout=10, polling=FAST_POLL)
    assert cancelled.cancelled_count == 3


def test_faults_endpoint_and_file(emu: Emulator, tmp_path: Path) -> None:
    wanted = {"seed": 3, "methods": {"Tasks.ListTasks": {"error_rates": {"500": 0.5}}}, "task_kill_rate": 0.1}
    status, body = _status(f"{emu.url}/_emulator/faults", "POST", json.dumps(wanted).encode())
    assert status == 200
    assert emu.faults.methods["Tasks.ListTasks"].error_rates == {500: 0.5}
    assert body["task_kill_rate"] == 0.1
    status, body = _status(f"{emu.url}/_emulator/faults", "POST", b'{"task_kill_rate": 2}')
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert emu.faults.task_kill_rate == 0.1

    yaml_file = tmp_path / "faults.yaml"
    yaml_file.write_text("seed: 5\nmethods:\n  Jobs.RunJob:\n    drop_rate: 0.25\n    drop_mode: close\n")
    assert Faults.from_file(yaml_file).methods["Jobs.RunJob"].drop_mode == "close"
    json_file = tmp_path / "faults.json"
    json_file.write_text(json.dumps({"default": {"latency_seconds": 0.01}}))
    assert Faults.from_file(json_file).for_method("Jobs.GetJob").latency_seconds == 0.01
    with pytest.raises(ValidationError):
        Faults.model_validate({"methods": {"Jobs.GetJob": {"error_rates": {404: 0.1}}}})


LAG = 3.0


def _first_seen(listed: Any, created: float, what: str, timeout: float = 60.0) -> float:
    """Seconds from ``created`` until ``listed()`` is true, polled with a deadline."""
    deadline = time.monotonic() + timeout
    while not listed():
        assert time.monotonic() < deadline, f"{what} never appeared in its list"
        time.sleep(0.05)
    return time.time() - created


def test_list_lag_leaves_new_resources_out_of_list_answers(emu: Emulator, clients: Clients) -> None:
    emu.set_faults(
        Faults(
            methods={
                "Executions.ListExecutions": MethodFaults(list_lag_seconds=LAG),
                "Tasks.ListTasks": MethodFaults(list_lag_seconds=LAG),
            }
        )
    )
    clients.create_job("lagged", "pass")
    assert [job.name.rsplit("/", 1)[-1] for job in clients.jobs.list_jobs(parent=clients.parent)] == ["lagged"]
    execution = clients.run("lagged").result(timeout=30, polling=FAST_POLL)
    created = execution.create_time.timestamp()
    # The execution exists (Get finds it, and it even finished) before List shows it.
    assert clients.executions.get_execution(name=execution.name).succeeded_count == 1
    parent = f"{clients.parent}/jobs/lagged"

    def executions_listed() -> bool:
        return [e.name for e in clients.executions.list_executions(parent=parent)] == [execution.name]

    assert _first_seen(executions_listed, created, "the execution") >= LAG
    assert len(clients.tasks_of(execution.name)) == 1


def test_list_lag_applies_to_log_entries(emu: Emulator, clients: Clients) -> None:
    clients.create_job("printer", "print('late line')")
    emu.set_faults(Faults(methods={"Logging.ListLogEntries": MethodFaults(list_lag_seconds=LAG)}))
    clients.run("printer").result(timeout=30, polling=FAST_POLL)
    body = json.dumps({"resourceNames": [f"projects/{emu.project}"]}).encode()
    deadline = time.monotonic() + 60
    while True:
        status, answer = _status(f"{emu.url}/v2/entries:list", "POST", body)
        seen = time.time()
        assert status == 200
        if answer:
            break
        assert time.monotonic() < deadline, "the log entry never appeared"
        time.sleep(0.05)
    [entry] = answer["entries"]
    assert entry["textPayload"] == "late line"
    received = datetime.fromisoformat(entry["receiveTimestamp"].replace("Z", "+00:00")).timestamp()
    assert seen - received >= LAG


def test_list_lag_must_be_finite_and_not_negative() -> None:
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValidationError, match="list_lag_seconds"):
            MethodFaults(list_lag_seconds=bad)


def test_a_task_cancelled_while_its_container_starts_never_runs(
    emu: Emulator, clients: Clients, tmp_path: Path
) -> None:
    # A start far longer than the test may take: only the cancel can end it, so the cancel lands inside it.
    emu.set_faults(Faults(task_start_delay_seconds=600))
    marker = tmp_path / "ran"
    clients.create_job("slow-start", f"open({str(marker)!r}, 'a').close()", task_count=2)
    name = clients.run("slow-start").metadata.name
    wait_until(lambda: clients.executions.get_execution(name=name).running_count == 2, 30, "both tasks started")
    cancelled = clients.executions.cancel_execution(name=name).result(timeout=30, polling=FAST_POLL)
    assert (cancelled.cancelled_count, cancelled.succeeded_count) == (2, 0)
    assert emu.task_stats()["attempts_started"] == 0
    assert not marker.exists()
