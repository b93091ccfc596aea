"""Every response, read by a client built from Google's run v2 discovery document, uses only its field names."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import googleapiclient
import httplib2
import pytest
from googleapiclient.discovery import build_from_document

from cloudrun_emulator import Emulator
from tests.emulator.conftest import PY

DOC = json.loads((Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "run.v2.json").read_text())
SCHEMAS: dict[str, Any] = DOC["schemas"]


def _schema_for_any(value: dict[str, Any]) -> str | None:
    type_name = value.get("@type", "").rsplit("/", 1)[-1]  # google.cloud.run.v2.Execution
    if not type_name.startswith("google.cloud.run.v2."):
        return None
    return "GoogleCloudRunV2" + type_name.rsplit(".", 1)[-1]


def walk(value: Any, schema: dict[str, Any], path: str, problems: list[str]) -> None:
    """Check every key of ``value`` against ``schema``, recursively."""
    if "$ref" in schema:
        walk(value, SCHEMAS[schema["$ref"]], path, problems)
        return
    if schema.get("type") == "array":
        for i, item in enumerate(value):
            walk(item, schema["items"], f"{path}[{i}]", problems)
        return
    if schema.get("type") != "object" or not isinstance(value, dict):
        return
    properties = schema.get("properties")
    if properties is None:
        _walk_map(value, schema.get("additionalProperties", {}), path, problems)
        return
    for key, item in value.items():
        if key not in properties:
            problems.append(f"{path}.{key} is not in {schema.get('id', 'the schema')}")
        else:
            walk(item, properties[key], f"{path}.{key}", problems)


def _walk_map(value: dict[str, Any], extra: dict[str, Any], path: str, problems: list[str]) -> None:
    """An object without declared properties: a map, or a ``google.protobuf.Any`` named by its ``@type``."""
    if extra.get("type") == "any" and "@type" in value:
        name = _schema_for_any(value)
        if name is None:
            problems.append(f"{path}: unexpected @type {value['@type']}")
            return
        walk({k: v for k, v in value.items() if k != "@type"}, SCHEMAS[name], path, problems)
        return
    for key, item in value.items():
        walk(item, extra, f"{path}.{key}", problems)


class RecordingHttp(httplib2.Http):
    """Counts the responses the discovery client receives, so the test can prove it walked them all."""

    def __init__(self) -> None:
        super().__init__()
        self.responses = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        self.responses += 1
        return response


def test_every_response_uses_discovery_field_names(emu: Emulator) -> None:
    http = RecordingHttp()
    service = build_from_document(DOC, http=http, client_options={"api_endpoint": emu.url + "/"})
    locations = service.projects().locations()
    parent = f"projects/{emu.project}/locations/{emu.region}"
    problems: list[str] = []
    walked = 0

    def call(request: Any, method: dict[str, Any]) -> Any:
        nonlocal walked
        body = request.execute()
        walk(body, method["response"], method["id"], problems)
        walked += 1
        return body

    methods = DOC["resources"]["projects"]["resources"]["locations"]["resources"]
    jobs_m, ops_m = methods["jobs"]["methods"], methods["operations"]["methods"]
    exec_m = methods["jobs"]["resources"]["executions"]["methods"]
    task_m = methods["jobs"]["resources"]["executions"]["resources"]["tasks"]["methods"]

    job = {
        "labels": {"team": "fanout"},
        "template": {
            "taskCount": 2,
            "parallelism": 1,
            "template": {
                "containers": [
                    {"image": "i", "command": [PY, "-c", "import sys; sys.exit(int(sys.argv[1]))"], "args": ["0"]}
                ],
                "maxRetries": 1,
                "timeout": "20s",
            },
        },
    }
    call(locations.jobs().create(parent=parent, jobId="disc", body=job), jobs_m["create"])
    got = call(locations.jobs().get(name=f"{parent}/jobs/disc"), jobs_m["get"])
    call(locations.jobs().patch(name=got["name"], body={**job, "labels": {"team": "b"}}), jobs_m["patch"])
    call(locations.jobs().list(parent=parent, pageSize=1), jobs_m["list"])

    body = {"overrides": {"containerOverrides": [{"args": ["3"]}], "taskCount": 2}}
    operation = call(locations.jobs().run(name=got["name"], body=body), jobs_m["run"])
    deadline = time.monotonic() + 20
    while not operation.get("done"):
        assert time.monotonic() < deadline, "the execution never finished"
        time.sleep(0.1)
        operation = call(locations.operations().get(name=operation["name"]), ops_m["get"])
    assert operation["error"]["code"] == 9
    execution = operation["metadata"]["name"]
    call(locations.operations().wait(name=operation["name"], body={"timeout": "1s"}), ops_m["wait"])
    call(locations.operations().list(name=parent, pageSize=2), ops_m["list"])
    call(locations.jobs().executions().get(name=execution), exec_m["get"])
    call(locations.jobs().executions().list(parent=got["name"]), exec_m["list"])
    tasks = call(locations.jobs().executions().tasks().list(parent=execution), task_m["list"])
    assert [t["lastAttemptResult"]["exitCode"] for t in tasks["tasks"]] == [3, 3]
    call(locations.jobs().executions().tasks().get(name=tasks["tasks"][0]["name"]), task_m["get"])

    slow = {"overrides": {"containerOverrides": [{"name": "", "args": ["0"]}]}}
    running = call(locations.jobs().run(name=got["name"], body=slow), jobs_m["run"])
    name = running["metadata"]["name"]
    call(locations.jobs().executions().cancel(name=name, body={}), exec_m["cancel"])
    call(locations.jobs().executions().delete(name=name), exec_m["delete"])
    call(locations.jobs().delete(name=got["name"]), jobs_m["delete"])

    assert problems == []
    assert walked == http.responses


def test_walk_reports_unknown_fields() -> None:
    problems: list[str] = []
    walk(
        {"name": "x", "bogus": 1, "template": {"maxRetries": 1, "nope": 2}},
        {"$ref": "GoogleCloudRunV2Execution"},
        "e",
        problems,
    )
    assert problems == [
        "e.bogus is not in GoogleCloudRunV2Execution",
        "e.template.nope is not in GoogleCloudRunV2TaskTemplate",
    ]


@pytest.mark.parametrize("enum_encoding", [False, True])
def test_enum_encoding(emu: Emulator, enum_encoding: bool) -> None:
    """GAPIC REST clients ask for ``$alt=json;enum-encoding=int``: enums then come as numbers."""
    body = json.dumps({"template": {"template": {"containers": [{"image": "i", "command": ["true"]}]}}})
    url = f"{emu.url}/v2/projects/p/locations/l/jobs?jobId=e"
    if enum_encoding:
        url += "&%24alt=json%3Benum-encoding%3Dint"
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        operation = json.loads(response.read())
    state = operation["response"]["terminalCondition"]["state"]
    assert state == (4 if enum_encoding else "CONDITION_SUCCEEDED")
