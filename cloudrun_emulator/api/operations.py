"""Operations.* handlers (google.longrunning, as Cloud Run serves them)."""

from __future__ import annotations

from google.longrunning import operations_pb2

from cloudrun_emulator.api.routing import LOC, OP, Call, route
from cloudrun_emulator.errors import invalid
from cloudrun_emulator.records import Wire
from cloudrun_emulator.service import CloudRunService

DEFAULT_WAIT_SECONDS = 60.0


async def get_operation(s: CloudRunService, c: Call) -> Wire:
    return s.get_operation(*c.where, c.params["operation"])


async def wait_operation(s: CloudRunService, c: Call) -> Wire:
    raw = c.body.get("timeout", "") if isinstance(c.body, dict) else ""
    timeout = DEFAULT_WAIT_SECONDS
    if raw:
        try:
            timeout = float(str(raw).removesuffix("s"))
        except ValueError:
            raise invalid("timeout", f"invalid duration {raw!r}") from None
    return await s.wait_operation(*c.where, c.params["operation"], timeout)


async def list_operations(s: CloudRunService, c: Call) -> Wire:
    return s.list_operations(*c.where, c.query.get("pageSize"), c.query.get("pageToken", ""))


async def delete_operation(s: CloudRunService, c: Call) -> Wire:
    return s.delete_operation(*c.where, c.params["operation"])


_OP = operations_pb2.Operation.DESCRIPTOR
ROUTES = [
    route(
        "GET",
        LOC + r"/operations",
        "Operations.ListOperations",
        list_operations,
        operations_pb2.ListOperationsResponse.DESCRIPTOR,
    ),
    route("GET", OP, "Operations.GetOperation", get_operation, _OP),
    route("DELETE", OP, "Operations.DeleteOperation", delete_operation, None),
    route("POST", OP + r":wait", "Operations.WaitOperation", wait_operation, _OP, has_body=True),
]
