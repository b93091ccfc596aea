"""The emulator's own discovery document (``GET /$discovery/rest?version=v2``): a google-api-python-client
built from it at run time drives jobs, executions and tasks; it agrees with Google's run v2 document on every
method it lists; a method the emulator does not implement answers 501 UNIMPLEMENTED in google.rpc.Status form."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import googleapiclient
import httplib2
import pytest
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from cloudrun_emulator import Emulator
from tests.emulator.conftest import PY

GOOGLE = json.loads(
    (Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "run.v2.json").read_text()
)


def _served(emu: Emulator, version: str = "v2") -> Any:
    with urllib.request.urlopen(f"{emu.url}/$discovery/rest?version={version}", timeout=10) as response:
        return json.loads(response.read())


def _methods(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def visit(node: dict[str, Any]) -> None:
        for method in node.get("methods", {}).values():
            found[method["id"]] = method
        for child in node.get("resources", {}).values():
            visit(child)

    visit(doc)
    return found


def test_a_client_built_from_the_served_document_drives_jobs(emu: Emulator) -> None:
    url = emu.url + "/$discovery/rest?version={apiVersion}"
    service = build("run", "v2", discoveryServiceUrl=url, http=httplib2.Http(), static_discovery=False)
    jobs = service.projects().locations().jobs()
    parent = f"projects/{emu.project}/locations/{emu.region}"
    container = {"image": "i", "command": [PY, "-c", "import sys; print(sys.argv[1:])"], "args": ["a"]}
    body = {"template": {"taskCount": 2, "template": {"containers": [container], "timeout": "20s"}}}
    created = jobs.create(parent=parent, jobId="disc", body=body).execute()
    assert created["done"]
    assert [j["name"] for j in jobs.list(parent=parent, pageSize=5).execute()["jobs"]] == [f"{parent}/jobs/disc"]
    job = jobs.get(name=f"{parent}/jobs/disc").execute()
    assert job["template"]["taskCount"] == 2

    overrides = {"overrides": {"containerOverrides": [{"args": ["b"]}], "taskCount": 1}}
    operation = jobs.run(name=job["name"], body=overrides).execute()
    deadline = time.monotonic() + 20
    while not operation.get("done"):
        assert time.monotonic() < deadline, "the execution never finished"
        time.sleep(0.05)
        operation = service.projects().locations().operations().get(name=operation["name"]).execute()
    execution = operation["response"]["name"]
    assert operation["response"]["succeededCount"] == 1
    assert jobs.executions().get(name=execution).execute()["taskCount"] == 1
    (task,) = jobs.executions().tasks().list(parent=execution).execute()["tasks"]
    assert task["lastAttemptResult"].get("exitCode", 0) == 0  # proto3 JSON leaves out zero values
    with pytest.raises(HttpError) as unimplemented:
        jobs.executions().exportStatus(name=execution, operationId="export-1").execute()
    assert unimplemented.value.status_code == 501
    error = json.loads(unimplemented.value.content)["error"]
    assert (error["code"], error["status"]) == (501, "UNIMPLEMENTED")
    assert emu.stats()["Executions.ExportStatus"] == 1


def test_the_served_document_agrees_with_googles(emu: Emulator) -> None:
    ours, theirs = _served(emu), GOOGLE
    assert ours["rootUrl"] == emu.url + "/"
    mine, google = _methods(ours), _methods(theirs)
    assert len(mine) == 20
    for method_id, method in mine.items():
        other = google[method_id]
        for key in ("httpMethod", "path", "parameterOrder", "request"):
            assert method.get(key) == other.get(key), (method_id, key)
        # Not in the installed google-cloud-run, so the emulator cannot name its response message.
        if method_id != "run.projects.locations.jobs.executions.exportStatus":
            assert method["response"] == other["response"], method_id
        for name, parameter in method["parameters"].items():
            assert (parameter["location"], parameter["type"]) == (
                other["parameters"][name]["location"],
                other["parameters"][name]["type"],
            ), (method_id, name)
    for name, schema in ours["schemas"].items():
        for field, shape in schema["properties"].items():
            other = theirs["schemas"][name]["properties"][field]
            assert (shape.get("type"), shape.get("format"), shape.get("$ref")) == (
                other.get("type"),
                other.get("format"),
                other.get("$ref"),
            ), (name, field)
            if "enum" in shape:
                assert set(shape["enum"]) <= set(other["enum"]), (name, field)


def test_only_v2_is_served(emu: Emulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as missing:
        _served(emu, "v1")
    assert missing.value.code == 404
    assert json.loads(missing.value.read())["error"]["status"] == "NOT_FOUND"
