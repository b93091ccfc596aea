"""Logging.ListLogEntries (``POST /v2/entries:list``), as Cloud Logging v2 serves it."""

from __future__ import annotations

import asyncio
import time

from cloudrun_emulator.api.routing import Call, route
from cloudrun_emulator.errors import ApiError, invalid
from cloudrun_emulator.logfilter import FilterTimeout, compile_filter, time_budget
from cloudrun_emulator.logstore import page_size_of, select
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
    size = page_size_of(body.get("pageSize"))
    candidates = s.logs.candidates(flt, descending=order == "timestamp desc", page_token=str(body.get("pageToken", "")))
    lag = s.faults.list_lag("Logging.ListLogEntries")
    if lag:
        newest = int((time.time() - lag) * 1_000_000)
        candidates = (record for record in candidates if record.receive_ts <= newest)
    budget = s.logs.query_budget_seconds

    def matching() -> tuple[list[Wire], str]:
        with time_budget(budget):
            return select(candidates, flt, projects=projects, page_size=size)

    # Off the event loop, so one expensive filter never holds up the other requests.
    try:
        entries, token = await asyncio.to_thread(matching)
    except FilterTimeout:
        raise ApiError(
            "DEADLINE_EXCEEDED",
            f"The filter took more than {budget:g} s to evaluate over the stored entries; simplify it "
            "(regular expressions are the usual cause) or narrow it to fewer executions.",
        ) from None
    out: Wire = {"entries": entries} if entries else {}
    if token:
        out["nextPageToken"] = token
    return out


ROUTES = [route("POST", r"/v2/entries:list", "Logging.ListLogEntries", list_entries, None, has_body=True)]
