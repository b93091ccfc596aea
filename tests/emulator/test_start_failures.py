"""Tasks whose container never starts (a secret without a value, a command that does not exist, a NUL byte in
an argument) fail as Cloud Run reports such tasks: no exit code, and conditions and the last attempt's status
say why. Read at the wire level, then through the official client."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import run_v2

from cloudrun_emulator import Emulator
from tests.emulator.conftest import FAST_POLL, PY, Clients

FAILED_PRECONDITION = 9


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _create(clients: Clients, job_id: str, container: run_v2.Container) -> None:
    template = run_v2.TaskTemplate(containers=[container], max_retries=3, timeout="30s")
    job = run_v2.Job(template=run_v2.ExecutionTemplate(template=template))
    clients.jobs.create_job(parent=clients.parent, job=job, job_id=job_id).result(timeout=10, polling=FAST_POLL)


def _secret_env() -> run_v2.Container:
    source = run_v2.EnvVarSource(secret_key_ref=run_v2.SecretKeySelector(secret="db-password", version="3"))
    return run_v2.Container(
        image="example.com/app:1",
        command=[PY, "-c", "pass"],
        env=[run_v2.EnvVar(name="DB_PASSWORD", value_source=source)],
    )


CASES = {
    "secret": (_secret_env(), "Secret 'db-password' version 3 (environment variable DB_PASSWORD) was not found"),
    "command": (
        run_v2.Container(image="example.com/app:1", command=["/no/such/program", "--flag"]),
        "Application failed to start: cannot run '/no/such/program': No such file or directory",
    ),
    "nul": (
        run_v2.Container(image="example.com/app:1", command=[PY, "-c", "pass"], args=["a\x00b"]),
        "Application failed to start: the command line cannot be executed: embedded null byte",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_task_that_never_starts_fails_with_its_reason(emu: Emulator, clients: Clients, case: str) -> None:
    container, reason = CASES[case]
    _create(clients, "broken", container)
    with pytest.raises(exceptions.FailedPrecondition, match="failed with message"):
        clients.run("broken").result(timeout=30, polling=FAST_POLL)
    [execution] = clients.executions.list_executions(parent=f"{clients.parent}/jobs/broken")

    [task] = _get(f"{emu.url}/v2/{execution.name}/tasks")["tasks"]
    result = task["lastAttemptResult"]
    assert "exitCode" not in result
    assert result["status"]["code"] == FAILED_PRECONDITION
    assert result["status"]["message"].startswith(reason)
    assert "startTime" not in task
    assert "retried" not in task, "a container that cannot start is not retried"
    started, completed = task["conditions"]
    assert (started["type"], started["state"]) == ("Started", "CONDITION_FAILED")
    assert (completed["type"], completed["state"]) == ("Completed", "CONDITION_FAILED")
    for condition in (started, completed):
        assert condition["message"].startswith(reason)
        assert "executionReason" not in condition
        assert condition.get("reason") == ("SECRETS_ACCESS_CHECK_FAILED" if case == "secret" else None)

    wire = _get(f"{emu.url}/v2/{execution.name}")
    done = next(c for c in wire["conditions"] if c["type"] == "Completed")
    assert done["state"] == "CONDITION_FAILED"
    assert reason in done["message"]
    assert "executionReason" not in done, "no container ran, so there was no exit code"
    assert wire["failedCount"] == 1

    [typed] = clients.tasks_of(execution.name)
    assert typed.last_attempt_result.status.message.startswith(reason)
    assert not typed.start_time


def test_the_reason_is_written_to_the_system_log(emu: Emulator, clients: Clients) -> None:
    _create(clients, "broken", CASES["command"][0])
    with pytest.raises(exceptions.FailedPrecondition):
        clients.run("broken").result(timeout=30, polling=FAST_POLL)
    body = json.dumps(
        {"resourceNames": [f"projects/{emu.project}"], "filter": 'log_id("run.googleapis.com/varlog/system")'}
    )
    request = urllib.request.Request(
        f"{emu.url}/v2/entries:list", data=body.encode(), method="POST", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        entries = json.loads(response.read())["entries"]
    assert [e["textPayload"] for e in entries] == [
        "Application failed to start: cannot run '/no/such/program': No such file or directory."
    ]
