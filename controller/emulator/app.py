"""The HTTP/JSON surface: Google's REST paths for Cloud Run v2 and Logging v2, plus ``/_emulator/*``.

A raw ASGI app (no framework routing: Google's paths put verbs after a colon, ``jobs/x:run``). Each request is
matched to its RPC, counted, put through fault injection, served by the backend, and answered in the JSON
shape Google's HTTP gateways use, honouring ``$alt=json;enum-encoding=int`` as the GAPIC REST clients ask.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import ValidationError

from controller.emulator.backend import Backend
from controller.emulator.errors import STATUS_FOR_HTTP, ApiError, invalid
from controller.emulator.faults import FaultInjector, Faults
from controller.emulator.logfilter import compile_filter
from controller.emulator.logstore import page_size_of

log = logging.getLogger("controller.emulator")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_MAX_BODY = 32 * 1024 * 1024


class ClientGone(Exception):
    """The client disconnected before its request was read."""


@dataclass(frozen=True)
class Call:
    """One parsed request."""

    params: dict[str, str]
    query: dict[str, str]
    body: Any


Handler = Callable[[Backend, Call], Awaitable[dict[str, Any]]]
_LOC = r"/v2/projects/(?P<project>[^/:]+)/locations/(?P<location>[^/:]+)"
_JOB = _LOC + r"/jobs/(?P<job>[^/:]+)"
_EXEC = _JOB + r"/executions/(?P<execution>[^/:]+)"
_OP = _LOC + r"/operations/(?P<operation>[^/:]+)"


def _descriptor(message: Any) -> Descriptor:
    descriptor: Descriptor = message.pb(message()).DESCRIPTOR if hasattr(message, "pb") else message.DESCRIPTOR
    return descriptor


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    rpc: str
    handler: Handler
    response: Descriptor | None
    has_body: bool


class Stats:
    """Request counts per RPC; read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def hit(self, rpc: str) -> None:
        with self._lock:
            self._counts[rpc] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


def _flag(call: Call, name: str) -> bool:
    return call.query.get(name, "").lower() == "true"


async def _create_job(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.create_job(p["project"], p["location"], c.query.get("jobId", ""), c.body, _flag(c, "validateOnly"))


async def _get_job(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.render_job(b.job(p["project"], p["location"], p["job"]))


async def _list_jobs(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.list_jobs(p["project"], p["location"], c.query.get("pageSize"), c.query.get("pageToken", ""))


async def _update_job(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    if isinstance(c.body, dict) and c.body.get("name") not in (None, "", _job_name(p)):
        raise invalid("job.name", "the job name in the body does not match the URL")
    return b.update_job(
        p["project"], p["location"], p["job"], c.body, _flag(c, "allowMissing"), _flag(c, "validateOnly")
    )


def _job_name(p: dict[str, str]) -> str:
    return f"projects/{p['project']}/locations/{p['location']}/jobs/{p['job']}"


async def _delete_job(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.delete_job(p["project"], p["location"], p["job"], c.query.get("etag", ""), _flag(c, "validateOnly"))


async def _run_job(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.run_job(p["project"], p["location"], p["job"], c.body)


async def _get_execution(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.render_execution(b.execution(p["project"], p["location"], p["job"], p["execution"]))


async def _list_executions(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.list_executions(
        p["project"], p["location"], p["job"], c.query.get("pageSize"), c.query.get("pageToken", "")
    )


async def _cancel_execution(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.cancel_execution(p["project"], p["location"], p["job"], p["execution"], c.body)


async def _delete_execution(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.delete_execution(
        p["project"], p["location"], p["job"], p["execution"], c.query.get("etag", ""), _flag(c, "validateOnly")
    )


async def _get_task(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    ex, task = b.task(p["project"], p["location"], p["job"], p["execution"], p["task"])
    return b.render_task(ex, task)


async def _list_tasks(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.list_tasks(
        p["project"], p["location"], p["job"], p["execution"], c.query.get("pageSize"), c.query.get("pageToken", "")
    )


async def _get_operation(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.render_operation(b.operation(p["project"], p["location"], p["operation"]))


async def _wait_operation(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    op = b.operation(p["project"], p["location"], p["operation"])
    raw = (c.body or {}).get("timeout", "") if isinstance(c.body, dict) else ""
    timeout = 60.0
    if raw:
        try:
            timeout = float(str(raw).removesuffix("s"))
        except ValueError:
            raise invalid("timeout", f"invalid duration {raw!r}") from None
    return await b.wait_operation(op, timeout)


async def _list_operations(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.list_operations(p["project"], p["location"], c.query.get("pageSize"), c.query.get("pageToken", ""))


async def _delete_operation(b: Backend, c: Call) -> dict[str, Any]:
    p = c.params
    return b.delete_operation(p["project"], p["location"], p["operation"])


async def _unimplemented(b: Backend, c: Call) -> dict[str, Any]:
    raise ApiError("UNIMPLEMENTED", "This method is not implemented by the local Cloud Run emulator.")


async def _list_entries(b: Backend, c: Call) -> dict[str, Any]:
    body = c.body if isinstance(c.body, dict) else {}
    if c.body is not None and not isinstance(c.body, dict):
        raise invalid("", "Invalid JSON payload received. Expected an object.")
    names = body.get("resourceNames") or ([f"projects/{body['projectIds'][0]}"] if body.get("projectIds") else [])
    if not names:
        raise invalid("resource_names", "resource_names is required")
    projects = {n.split("/", 1)[1].split("/", 1)[0] for n in names if n.startswith("projects/")}
    order = str(body.get("orderBy", "timestamp asc")).strip().lower()
    if order not in ("timestamp asc", "timestamp desc", "timestamp"):
        raise invalid("order_by", f"order_by must be 'timestamp asc' or 'timestamp desc', got {order!r}")
    flt = compile_filter(str(body.get("filter", "")))
    entries, token = b.logs.list(
        flt,
        projects=projects,
        descending=order == "timestamp desc",
        page_size=page_size_of(body.get("pageSize")),
        page_token=str(body.get("pageToken", "")),
    )
    out: dict[str, Any] = {"entries": entries} if entries else {}
    if token:
        out["nextPageToken"] = token
    return out


def _routes() -> list[Route]:
    op = operations_pb2.Operation.DESCRIPTOR
    job = _descriptor(run_v2.Job)
    execution = _descriptor(run_v2.Execution)
    task = _descriptor(run_v2.Task)
    table: list[tuple[str, str, str, Handler, Descriptor | None, bool]] = [
        ("POST", _LOC + r"/jobs", "Jobs.CreateJob", _create_job, op, True),
        ("GET", _LOC + r"/jobs", "Jobs.ListJobs", _list_jobs, _descriptor(run_v2.ListJobsResponse), False),
        ("GET", _JOB, "Jobs.GetJob", _get_job, job, False),
        ("PATCH", _JOB, "Jobs.UpdateJob", _update_job, op, True),
        ("DELETE", _JOB, "Jobs.DeleteJob", _delete_job, op, False),
        ("POST", _JOB + r":run", "Jobs.RunJob", _run_job, op, True),
        ("GET", _JOB + r":getIamPolicy", "Jobs.GetIamPolicy", _unimplemented, None, False),
        ("POST", _JOB + r":setIamPolicy", "Jobs.SetIamPolicy", _unimplemented, None, True),
        ("POST", _JOB + r":testIamPermissions", "Jobs.TestIamPermissions", _unimplemented, None, True),
        (
            "GET",
            _JOB + r"/executions",
            "Executions.ListExecutions",
            _list_executions,
            _descriptor(run_v2.ListExecutionsResponse),
            False,
        ),
        ("GET", _EXEC, "Executions.GetExecution", _get_execution, execution, False),
        ("DELETE", _EXEC, "Executions.DeleteExecution", _delete_execution, op, False),
        ("POST", _EXEC + r":cancel", "Executions.CancelExecution", _cancel_execution, op, True),
        ("GET", _EXEC + r"/tasks", "Tasks.ListTasks", _list_tasks, _descriptor(run_v2.ListTasksResponse), False),
        ("GET", _EXEC + r"/tasks/(?P<task>[^/:]+)", "Tasks.GetTask", _get_task, task, False),
        (
            "GET",
            _LOC + r"/operations",
            "Operations.ListOperations",
            _list_operations,
            operations_pb2.ListOperationsResponse.DESCRIPTOR,
            False,
        ),
        ("GET", _OP, "Operations.GetOperation", _get_operation, op, False),
        ("DELETE", _OP, "Operations.DeleteOperation", _delete_operation, None, False),
        ("POST", _OP + r":wait", "Operations.WaitOperation", _wait_operation, op, True),
        ("POST", r"/v2/entries:list", "Logging.ListLogEntries", _list_entries, None, True),
    ]
    return [Route(m, re.compile(p + r"\Z"), rpc, h, d, body) for m, p, rpc, h, d, body in table]


ROUTES = _routes()


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route for a request, with its path parameters; None for an unknown path or verb."""
    for route in ROUTES:
        if route.method == method:
            found = route.pattern.match(path)
            if found:
                return route, found.groupdict()
    return None


# -------------------------------------------------------------- enum ints

_FIELDS_BY_JSON: dict[str, dict[str, FieldDescriptor]] = {}


def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    cached = _FIELDS_BY_JSON.get(descriptor.full_name)
    if cached is None:
        cached = {f.json_name: f for f in descriptor.fields}
        _FIELDS_BY_JSON[descriptor.full_name] = cached
    return cached


def enums_as_ints(value: Any, descriptor: Descriptor) -> Any:
    """The same JSON with enum names replaced by their numbers, as ``enum-encoding=int`` asks."""
    if not isinstance(value, dict):
        return value
    if descriptor.full_name == "google.protobuf.Any":
        type_url = value.get("@type", "")
        try:
            descriptor = descriptor_pool.Default().FindMessageTypeByName(type_url.rsplit("/", 1)[-1])
        except KeyError:
            return value
    fields = _fields(descriptor)
    out: dict[str, Any] = {}
    for key, item in value.items():
        fd = fields.get(key)
        if fd is None:
            out[key] = item
        elif fd.enum_type is not None:
            values = fd.enum_type.values_by_name

            def number(name: Any, values: Any = values) -> Any:
                return values[name].number if isinstance(name, str) and name in values else name

            out[key] = [number(x) for x in item] if isinstance(item, list) else number(item)
        elif fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            sub = fd.message_type
            out[key] = [enums_as_ints(x, sub) for x in item] if isinstance(item, list) else enums_as_ints(item, sub)
        else:
            out[key] = item
    return out


# ------------------------------------------------------------------ ASGI


class EmulatorApp:
    """The ASGI application; ``backend`` is used only on the event loop that serves this app."""

    def __init__(self, backend: Backend, faults: FaultInjector, stats: Stats) -> None:
        self.backend = backend
        self.faults = faults
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        method = scope["method"]
        path = scope["path"]
        status, rpc = 500, "-"
        try:
            if path.startswith("/_emulator/"):
                status, payload = await self._own(method, path, receive)
                rpc = "Emulator"
            else:
                status, payload, rpc = await self._google(scope, receive, send)
            if payload is not None:
                await _send_json(send, status, payload)
        except (ClientGone, OSError):
            # The client went away before we could answer; nothing to tell it.
            status = 499
        finally:
            log.debug(
                "%s %s -> %s %s %.1fms",
                method,
                scope.get("raw_path", path.encode()).decode("latin-1"),
                status,
                rpc,
                (time.perf_counter() - started) * 1000,
            )

    async def _google(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, Any, str]:
        method, path = scope["method"], scope["path"]
        found = match(method, path)
        if found is None:
            error = ApiError("NOT_FOUND", f"The URL {path} ({method}) is not served by the Cloud Run emulator.")
            return error.http_code, error.body(), "-"
        route, params = found
        rpc = route.rpc
        self.stats.hit(rpc)
        delay = self.faults.latency(rpc)
        if delay:
            await asyncio.sleep(delay)
        code = self.faults.error_code(rpc)
        if code is not None:
            error = ApiError(STATUS_FOR_HTTP[code], f"Injected fault: {STATUS_FOR_HTTP[code]} (emulator).")
            return error.http_code, error.body(), rpc
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        try:
            body = await _read_json(receive) if route.has_body else None
            payload = await route.handler(self.backend, Call(params, query, body))
        except ApiError as exc:
            return exc.http_code, exc.body(), rpc
        except ClientGone:
            raise
        except Exception:
            log.exception("%s %s failed in the emulator", method, path)
            error = ApiError("INTERNAL", "The emulator failed to serve this request.")
            return error.http_code, error.body(), rpc
        drop = self.faults.drop(rpc)
        if drop == "close" and _abort(send):
            return 0, None, rpc
        if drop is not None:
            error = ApiError("UNAVAILABLE", "Injected fault: the answer was lost after the work was done.")
            return error.http_code, error.body(), rpc
        if "enum-encoding=int" in query.get("$alt", "") and route.response is not None:
            payload = enums_as_ints(payload, route.response)
        return 200, payload, rpc

    async def _own(self, method: str, path: str, receive: Receive) -> tuple[int, Any]:
        if path == "/_emulator/stats" and method == "GET":
            return 200, {"requests": self.stats.snapshot(), **self.backend.task_stats()}
        if path == "/_emulator/stats" and method == "DELETE":
            self.stats.reset()
            self.backend.reset_peak()
            return 200, {}
        if path == "/_emulator/faults" and method == "GET":
            return 200, self.faults.faults.model_dump(mode="json")
        if path == "/_emulator/faults" and method == "POST":
            try:
                faults = Faults.model_validate(await _read_json(receive) or {})
            except ApiError as exc:
                return exc.http_code, exc.body()
            except ValidationError as exc:
                error = invalid("faults", str(exc).replace("\n", " "))
                return error.http_code, error.body()
            self.faults.set(faults)
            return 200, faults.model_dump(mode="json")
        if path == "/_emulator/healthz":
            return 200, {"status": "ok"}
        error = ApiError("NOT_FOUND", f"No emulator endpoint {method} {path}.")
        return error.http_code, error.body()


async def _read_json(receive: Receive) -> Any:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise invalid("", f"Request body larger than {_MAX_BODY} bytes.")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid(
            "", "Invalid JSON payload received. Unexpected token.", "Invalid JSON payload received. Unexpected token."
        ) from None


async def _send_json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json; charset=UTF-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _abort(send: Send) -> bool:
    """Close the connection without an answer; False when the server gives no way to (then answer 503).

    uvicorn's ``send`` is a method of its per-request cycle object, which holds the connection's transport.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True
