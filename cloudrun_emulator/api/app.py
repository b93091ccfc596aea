"""The ASGI app: Google's REST paths for Cloud Run v2 and Logging v2, plus the emulator's own ``/_emulator/*``.

A raw ASGI app (no framework routing: Google's paths put verbs after a colon, ``jobs/x:run``). Each request is
matched to its route and served by the dispatcher (``rpc.py``: counted, faults, the resource's handler), then
answered in the JSON shape Google's HTTP gateways use, honouring ``$alt=json;enum-encoding=int`` as the GAPIC
REST clients ask.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from cloudrun_emulator.api import discovery
from cloudrun_emulator.api.rpc import LOST, ROUTER, ClientGone, Dispatcher
from cloudrun_emulator.errors import ApiError, invalid
from cloudrun_emulator.faults import Faults
from cloudrun_emulator.render import enums_as_ints

log = logging.getLogger("cloudrun_emulator")
DISCOVERY_PATH = "/$discovery/rest"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_MAX_BODY = 32 * 1024 * 1024
# protobuf's JSON parser stops at 100 levels of nesting (json_format's max_recursion_depth), and so does the
# emulator: any deeper body is refused before it reaches a parser that recurses.
MAX_JSON_DEPTH = 100


# ------------------------------------------------------------------ ASGI


class EmulatorApp:
    """The ASGI application; ``service`` is used only on the event loop that serves this app."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.service = dispatcher.service
        self.faults = dispatcher.faults
        self.stats = dispatcher.stats

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
            elif path == DISCOVERY_PATH and method == "GET":
                status, payload = _discovery(scope)
                rpc = "Discovery"
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
        found = ROUTER.match(method, path)
        if found is None:
            unknown = ApiError("NOT_FOUND", f"The URL {path} ({method}) is not served by the Cloud Run emulator.")
            return unknown.http_code, unknown.body(), "-"
        route, params = found
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        mask = _mask_text(scope, query)
        answer = await self.dispatcher.serve(route, params, query, lambda: _read_json(receive), mask)
        if answer.lost == "close" and _abort(send):
            return 0, None, route.rpc
        error = LOST if answer.lost is not None else answer.error
        if error is not None:
            return error.http_code, error.body(), route.rpc
        payload = answer.payload
        if "enum-encoding=int" in query.get("$alt", "") and route.response is not None:
            payload = enums_as_ints(payload, route.response)
        return 200, payload, route.rpc

    async def _own(self, method: str, path: str, receive: Receive) -> tuple[int, Any]:
        if path == "/_emulator/stats" and method == "GET":
            return 200, {"requests": self.stats.snapshot(), **self.service.task_stats()}
        if path == "/_emulator/stats" and method == "DELETE":
            self.stats.reset()
            self.service.reset_peak()
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
        if path == "/_emulator/buckets" and method == "GET":
            return 200, {"localBuckets": {b: str(f) for b, f in self.service.runtime.volumes.local_buckets.items()}}
        if path == "/_emulator/healthz":
            return 200, {"status": "ok"}
        error = ApiError("NOT_FOUND", f"No emulator endpoint {method} {path}.")
        return error.http_code, error.body()


def _discovery(scope: Scope) -> tuple[int, Any]:
    """The discovery document of ``version=v2``, its URLs at the host the client asked (its Host header)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    version = query.get("version", [""])[-1]
    if version != "v2":
        error = ApiError("NOT_FOUND", f"No discovery document for version {version!r}; the emulator serves v2.")
        return error.http_code, error.body()
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"), "")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"[{server[0]}]:{server[1]}" if ":" in str(server[0]) else f"{server[0]}:{server[1]}"
    return 200, discovery.document(f"http://{host}/")


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
    too_deep = f"Invalid JSON payload received. Nesting is deeper than {MAX_JSON_DEPTH} levels."
    try:
        value = json.loads(raw)
    except RecursionError:
        raise invalid("", too_deep, too_deep) from None
    except (ValueError, UnicodeDecodeError):
        raise invalid(
            "", "Invalid JSON payload received. Unexpected token.", "Invalid JSON payload received. Unexpected token."
        ) from None
    if _deeper_than(value, MAX_JSON_DEPTH):
        raise invalid("", too_deep, too_deep)
    return value


def _mask_text(scope: Scope, query: dict[str, str]) -> str:
    """The response field mask: the ``fields``/``$fields`` system parameter, else ``X-Goog-FieldMask``."""
    if "fields" in query or "$fields" in query:
        return query.get("$fields", query.get("fields", ""))
    for name, value in scope.get("headers", []):
        if name.lower() == b"x-goog-fieldmask":
            return str(value.decode("latin-1"))
    return ""


def _deeper_than(value: object, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels (checked without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


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
