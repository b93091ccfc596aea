"""prefect-gcp's own Cloud Run v2 models read the emulator's answers, driven as its worker drives them.

The worker (``prefect_gcp.workers.cloud_run_v2``) builds a discovery-document client, creates a job, gets it
until it is ready, runs it, gets the execution until it is done, and deletes the job. ``JobV2.get`` reads
``latestCreatedExecution`` and ``ExecutionV2.get`` reads ``parallelism`` as always present, as they are in
Cloud Run's answers, even for a job that has never run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import googleapiclient
import httplib2
import pytest
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from prefect_gcp.models.cloud_run_v2 import ExecutionV2, JobV2

from cloudrun_emulator import Emulator
from tests.emulator.conftest import PY

DOC = json.loads((Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "run.v2.json").read_text())
T = TypeVar("T")


def _poll(read: Callable[[], T], done: Callable[[T], bool], seconds: float, what: str) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.05)


def _body(code: str) -> dict[str, Any]:
    """A job body in the shape the worker's default job template renders."""
    return {
        "client": "prefect",
        "launchStage": "GA",
        "template": {
            "template": {
                "maxRetries": 0,
                "timeout": "60s",
                "containers": [
                    {
                        "image": "example.com/flow:latest",
                        "command": [PY, "-c", code],
                        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
                    }
                ],
            }
        },
    }


@pytest.mark.parametrize(("code", "succeeds"), [("print('hi')", True), ("raise SystemExit(3)", False)])
def test_job_and_execution_models_through_a_discovery_client(emu: Emulator, code: str, succeeds: bool) -> None:
    # The worker's client: the run v2 discovery document, ``.projects().locations()`` (see its ``_get_client``).
    service = build_from_document(DOC, http=httplib2.Http(), client_options={"api_endpoint": emu.url + "/"})
    client = service.projects().locations()
    project, region, job_name = emu.project, emu.region, "prefect-flow-run"

    JobV2.create(client, project, region, job_name, _body(code))
    job = _poll(lambda: JobV2.get(client, project, region, job_name), JobV2.is_ready, 30, "job ready")
    assert job.executionCount == 0
    assert job.latestCreatedExecution == {}
    assert not JobV2._is_missing_container(job.get_ready_condition())

    submission = JobV2.run(client, project, region, job_name)
    execution_name = submission["metadata"]["name"]
    execution = _poll(
        lambda: ExecutionV2.get(client, execution_name), lambda e: not e.is_running(), 60, "execution done"
    )
    assert execution.taskCount == 1
    assert execution.parallelism == 1
    assert execution.succeeded() is succeeds
    completed = execution.condition_after_completion()
    if succeeds:
        assert completed["state"] == "CONDITION_SUCCEEDED"
    else:
        assert completed["state"] == "CONDITION_FAILED"
        assert completed["message"].endswith("The container exited with an error.")

    ran = JobV2.get(client, project, region, job_name)
    assert ran.latestCreatedExecution["name"] == execution_name.rsplit("/", 1)[-1]
    assert ran.executionCount == 1

    JobV2.delete(client, project, region, job_name)
    with pytest.raises(HttpError) as missing:
        JobV2.get(client, project, region, job_name)
    assert missing.value.status_code == 404
