"""A task's structured log lines become entries as Cloud Logging makes them: the special JSON fields
(``logging.googleapis.com/labels``, trace, span, time, insert id, source location, HTTP request, operation)
move from ``jsonPayload`` onto the entry, so filters on ``labels.X``, ``trace`` and ``timestamp`` find them.
The task logs with google-cloud-logging's own ``StructuredLogHandler``; the entries are read with the
official client."""

from __future__ import annotations

import datetime as dt

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import logging as gcl
from google.cloud.logging_v2.types import ListLogEntriesRequest

from cloudrun_emulator import Emulator
from tests.emulator.conftest import FAST_POLL, Clients
from tests.emulator.test_grpc import _logging

TASK = """
import json, logging
from google.cloud.logging_v2.handlers import StructuredLogHandler

log = logging.getLogger("task")
log.addHandler(StructuredLogHandler(labels={"team": "fanout"}, project_id="local-project"))
log.propagate = False
log.warning("handler line", extra={
    "trace": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
    "http_request": {"requestMethod": "GET", "requestUrl": "https://example.com/x", "status": 200},
    "labels": {"item": "7"},
})
print(json.dumps({
    "message": "hand-made line", "other": 1, "time": "2026-01-02T03:04:05.678Z",
    "logging.googleapis.com/insertId": "my-insert-id",
    "logging.googleapis.com/labels": {"item": "8", "run.googleapis.com/task_index": "99"},
    "logging.googleapis.com/operation": {"id": "op-1", "producer": "fanout", "first": True},
}), flush=True)
odd = {"message": "odd shapes", "logging.googleapis.com/labels": "not-a-map", "httpRequest": {"status": "x"}}
print(json.dumps(odd), flush=True)
"""


@pytest.fixture
def logging_client(emu: Emulator) -> gcl.Client:
    return gcl.Client(
        project=emu.project,
        credentials=AnonymousCredentials(),
        _use_grpc=False,
        client_options={"api_endpoint": emu.url},
    )


def test_special_json_fields_move_onto_the_entry(emu: Emulator, clients: Clients, logging_client: gcl.Client) -> None:
    clients.create_job("structured", TASK)
    execution = clients.run("structured").result(timeout=30, polling=FAST_POLL).name.rsplit("/", 1)[-1]
    run = f'labels."run.googleapis.com/execution_name"="{execution}"'

    def entries(flt: str) -> list[gcl.LogEntry]:
        return list(logging_client.list_entries(filter_=f"{run} AND {flt}", order_by=gcl.ASCENDING))

    (handler,) = entries('labels.item="7"')
    assert handler.payload == {"message": "handler line"}
    assert handler.severity == "WARNING"
    assert handler.labels["team"] == "fanout"
    assert handler.labels["python_logger"] == "task"
    assert handler.labels["run.googleapis.com/execution_name"] == execution
    assert handler.trace == "0af7651916cd43dd8448eb211c80319c"
    assert handler.span_id == "b7ad6b7169203331"
    assert handler.http_request == {"requestMethod": "GET", "requestUrl": "https://example.com/x", "status": 200}
    assert handler.source_location["function"] == "<module>"
    assert int(handler.source_location["line"]) > 0
    assert [e.payload for e in entries('trace="0af7651916cd43dd8448eb211c80319c"')] == [handler.payload]
    assert [e.insert_id for e in entries('spanId="b7ad6b7169203331"')] == [handler.insert_id]
    (over_grpc,) = _logging(emu).list_log_entries(
        request=ListLogEntriesRequest(resource_names=[f"projects/{emu.project}"], filter=f'{run} AND labels.item="7"')
    )
    assert (over_grpc.span_id, over_grpc.http_request.status, over_grpc.source_location.function) == (
        "b7ad6b7169203331",
        200,
        "<module>",
    )

    # The client adds "the last 24 hours" to a filter that names no timestamp; this line's time is older.
    (made,) = entries('labels.item="8" AND timestamp>="2026-01-01T00:00:00Z"')
    assert made.payload == {"message": "hand-made line", "other": 1}
    assert made.timestamp == dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    assert made.insert_id == "my-insert-id"
    assert made.operation == {"id": "op-1", "producer": "fanout", "first": True}
    # The run's own labels are Cloud Run's; a line cannot change them.
    assert made.labels["run.googleapis.com/task_index"] == "0"
    assert [e.insert_id for e in entries('timestamp<"2026-06-01T00:00:00Z"')] == ["my-insert-id"]
    assert entries('labels.item="8"') == []

    # Values that do not fit their entry field stay in the payload.
    (odd,) = entries('jsonPayload.message="odd shapes"')
    assert odd.payload == {
        "message": "odd shapes",
        "logging.googleapis.com/labels": "not-a-map",
        "httpRequest": {"status": "x"},
    }
    assert odd.http_request is None
