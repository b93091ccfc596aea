"""Executions.* handlers."""

from __future__ import annotations

from google.cloud import run_v2
from google.longrunning import operations_pb2

from cloudrun_emulator.api.routing import EXEC, JOB, Call, descriptor, route, unimplemented
from cloudrun_emulator.records import Wire
from cloudrun_emulator.service import CloudRunService


async def get_execution(s: CloudRunService, c: Call) -> Wire:
    return s.get_execution(*c.where, c.params["job"], c.params["execution"])


async def list_executions(s: CloudRunService, c: Call) -> Wire:
    return s.list_executions(*c.where, c.params["job"], c.query.get("pageSize"), c.query.get("pageToken", ""))


async def cancel_execution(s: CloudRunService, c: Call) -> Wire:
    return s.cancel_execution(*c.where, c.params["job"], c.params["execution"], c.body)


async def delete_execution(s: CloudRunService, c: Call) -> Wire:
    p = c.params
    return s.delete_execution(*c.where, p["job"], p["execution"], c.query.get("etag", ""), c.flag("validateOnly"))


_OP = operations_pb2.Operation.DESCRIPTOR
ROUTES = [
    route(
        "GET",
        JOB + r"/executions",
        "Executions.ListExecutions",
        list_executions,
        descriptor(run_v2.ListExecutionsResponse),
    ),
    route("GET", EXEC, "Executions.GetExecution", get_execution, descriptor(run_v2.Execution)),
    route("DELETE", EXEC, "Executions.DeleteExecution", delete_execution, _OP),
    route("POST", EXEC + r":cancel", "Executions.CancelExecution", cancel_execution, _OP, has_body=True),
    route("GET", EXEC + r"/(?P<operation_id>[^/:]+):exportStatus", "Executions.ExportStatus", unimplemented, None),
]
