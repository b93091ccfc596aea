"""Response field masks (``fields`` / ``$fields`` / ``X-Goog-FieldMask``) on Get and List of jobs, executions
and tasks, read at the wire and through google-cloud-run's REST clients."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import run_v2

from cloudrun_emulator import Emulator
from tests.emulator.conftest import FAST_POLL, Clients

FAILS_ONCE = "import os, sys; sys.exit(3 if os.environ['CLOUD_RUN_TASK_INDEX'] == '1' else 0)"


def _get(emu: Emulator, path: str, fields: str | None = None, header: str | None = None) -> tuple[int, Any]:
    url = f"{emu.url}/v2/{path}"
    if fields is not None:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"fields": fields})
    request = urllib.request.Request(url, headers={"X-Goog-FieldMask": header} if header else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def execution(clients: Clients) -> run_v2.Execution:
    clients.create_job("masked", FAILS_ONCE, task_count=3)
    with pytest.raises(exceptions.FailedPrecondition):
        clients.run("masked").result(timeout=30, polling=FAST_POLL)
    [found] = clients.executions.list_executions(parent=f"{clients.parent}/jobs/masked")
    return found


def test_fields_on_list_tasks_keep_nested_paths_and_the_page_token(emu: Emulator, execution: run_v2.Execution) -> None:
    path = f"{execution.name}/tasks?pageSize=2"
    status, page = _get(emu, path, fields="tasks.index,tasks.lastAttemptResult,nextPageToken")
    assert status == 200
    assert set(page) == {"tasks", "nextPageToken"}
    assert [set(task) for task in page["tasks"]] == [{"index", "lastAttemptResult"}] * 2
    assert page["tasks"][0]["lastAttemptResult"] == {"status": {}}
    assert page["tasks"][1]["lastAttemptResult"]["exitCode"] == 3
    # The same mask written with sub-field parentheses and slashes, and as the header.
    for fields, header in (
        ("tasks(index,lastAttemptResult),nextPageToken", None),
        (None, "tasks/index,tasks/lastAttemptResult,nextPageToken"),
    ):
        assert _get(emu, path, fields=fields, header=header) == (200, page)
    # Without nextPageToken in the mask, the answer has no token, as Google's does.
    assert set(_get(emu, path, fields="tasks.index")[1]) == {"tasks"}


def test_fields_on_get_and_list_of_jobs_and_executions(
    emu: Emulator, clients: Clients, execution: run_v2.Execution
) -> None:
    status, body = _get(emu, execution.name, fields="name,failedCount,conditions(type,state)")
    assert status == 200
    assert body["name"] == execution.name
    assert body["failedCount"] == 1
    assert {c["type"] for c in body["conditions"]} >= {"Completed"}
    assert all(set(c) == {"type", "state"} for c in body["conditions"])
    assert set(body) == {"name", "failedCount", "conditions"}

    status, jobs = _get(emu, f"{clients.parent}/jobs", fields="jobs(name,executionCount)")
    assert (status, jobs) == (200, {"jobs": [{"name": f"{clients.parent}/jobs/masked", "executionCount": 1}]})
    status, job = _get(emu, f"{clients.parent}/jobs/masked", header="latestCreatedExecution.completionStatus")
    assert (status, job) == (200, {"latestCreatedExecution": {"completionStatus": "EXECUTION_FAILED"}})
    status, listed = _get(emu, f"{clients.parent}/jobs/masked/executions", fields="executions.taskCount")
    assert (status, listed) == (200, {"executions": [{"taskCount": 3}]})
    assert _get(emu, execution.name, fields="*")[1] == _get(emu, execution.name)[1]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ("tasks.noSuchField", "Task has no field tasks.noSuchField"),
        ("bogus", "ListTasksResponse has no field bogus"),
        ("tasks(index", "expected ')'"),
        ("tasks.index.x", "index has no sub-fields"),
    ],
)
def test_a_mask_naming_an_unknown_field_is_invalid_argument(
    emu: Emulator, execution: run_v2.Execution, fields: str, problem: str
) -> None:
    status, body = _get(emu, f"{execution.name}/tasks", fields=fields)
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert problem in body["error"]["message"]


def test_the_official_client_sends_the_mask_as_a_header(clients: Clients, execution: run_v2.Execution) -> None:
    mask = [("x-goog-fieldmask", "tasks.index,tasks.lastAttemptResult,nextPageToken")]
    tasks = list(
        clients.tasks.list_tasks(request=run_v2.ListTasksRequest(parent=execution.name, page_size=1), metadata=mask)
    )
    assert [t.index for t in tasks] == [0, 1, 2], "the pager followed nextPageToken through every page"
    assert [t.last_attempt_result.exit_code for t in tasks] == [0, 3, 0]
    assert all(t.name == "" and not t.conditions for t in tasks)
