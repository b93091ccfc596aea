"""Tasks.* handlers."""

from __future__ import annotations

from google.cloud import run_v2

from cloudrun_emulator.api.routing import EXEC, Call, descriptor, route
from cloudrun_emulator.records import Wire
from cloudrun_emulator.service import CloudRunService


async def get_task(s: CloudRunService, c: Call) -> Wire:
    p = c.params
    return s.get_task(*c.where, p["job"], p["execution"], p["task"])


async def list_tasks(s: CloudRunService, c: Call) -> Wire:
    p = c.params
    return s.list_tasks(*c.where, p["job"], p["execution"], c.query.get("pageSize"), c.query.get("pageToken", ""))


ROUTES = [
    route("GET", EXEC + r"/tasks", "Tasks.ListTasks", list_tasks, descriptor(run_v2.ListTasksResponse)),
    route("GET", EXEC + r"/tasks/(?P<task>[^/:]+)", "Tasks.GetTask", get_task, descriptor(run_v2.Task)),
]
