"""Logging.ListLogEntries (``POST /v2/entries:list``), as Cloud Logging v2 serves it."""

from __future__ import annotations

from cloudrun_emulator.api.routing import Call, route
from cloudrun_emulator.errors import invalid
from cloudrun_emulator.logfilter import compile_filter
from cloudrun_emulator.logstore import page_size_of
from cloudrun_emulator.records import Wire
from cloudrun_emulator.service import CloudRunService


async def list_entries(s: CloudRunService, c: Call) -> Wire:
    if c.body is not None and not isinstance(c.body, dict):
        raise invalid("", "Invalid JSON payload received. Expected an object.")
    body = c.body if isinstance(c.body, dict) else {}
    names = body.get("resourceNames") or ([f"projects/{body['projectIds'][0]}"] if body.get("projectIds") else [])
    if not names:
        raise invalid("resource_names", "resource_names is required")
    projects = {n.split("/", 1)[1].split("/", 1)[0] for n in names if n.startswith("projects/")}
    order = str(body.get("orderBy", "timestamp asc")).strip().lower()
    if order not in ("timestamp asc", "timestamp desc", "timestamp"):
        raise invalid("order_by", f"order_by must be 'timestamp asc' or 'timestamp desc', got {order!r}")
    flt = compile_filter(str(body.get("filter", "")))
    entries, token = s.logs.list(
        flt,
        projects=projects,
        descending=order == "timestamp desc",
        page_size=page_size_of(body.get("pageSize")),
        page_token=str(body.get("pageToken", "")),
    )
    out: Wire = {"entries": entries} if entries else {}
    if token:
        out["nextPageToken"] = token
    return out


ROUTES = [route("POST", r"/v2/entries:list", "Logging.ListLogEntries", list_entries, None, has_body=True)]
