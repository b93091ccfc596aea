"""Serving one RPC, whatever the transport: counted, put through fault injection, handled, its answer pruned.

The HTTP/JSON app (``app.py``) and the gRPC server (``grpc_app.py``) each turn a request into a route, its
path parameters, query and body, and hand it here; so both transports see the same state, the same injected
faults (keyed by the same RPC names) and the same request counts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from cloudrun_emulator import fieldmask
from cloudrun_emulator.api import entries, executions, jobs, operations, tasks
from cloudrun_emulator.api.routing import Call, Route, Router
from cloudrun_emulator.errors import STATUS_FOR_HTTP, ApiError
from cloudrun_emulator.faults import FaultInjector
from cloudrun_emulator.service import CloudRunService

log = logging.getLogger("cloudrun_emulator")
ROUTER = Router(jobs.ROUTES, executions.ROUTES, tasks.ROUTES, operations.ROUTES, entries.ROUTES)


class ClientGone(Exception):
    """The client disconnected before its request was read."""


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


@dataclass(frozen=True)
class Answer:
    """What to answer: the response's JSON, or an error, or ``lost`` (the work was done, the answer is lost)."""

    payload: Any = None
    error: ApiError | None = None
    lost: Literal["503", "close"] | None = None


class Dispatcher:
    """Serves routes on the emulator's event loop, for every transport."""

    def __init__(self, service: CloudRunService, faults: FaultInjector, stats: Stats) -> None:
        self.service = service
        self.faults = faults
        self.stats = stats

    async def serve(
        self,
        route: Route,
        params: dict[str, str],
        query: dict[str, str],
        read_body: Callable[[], Awaitable[object]],
        mask_text: str,
    ) -> Answer:
        """One call of ``route``; raises only ``ClientGone`` (from ``read_body``)."""
        rpc = route.rpc
        self.stats.hit(rpc)
        injected = await self._injected(rpc)
        if injected is not None:
            return Answer(error=injected)
        try:
            # A bad field mask is refused before any work is done, as Google does.
            mask = fieldmask.parse(mask_text, route.response)
            body = await read_body() if route.has_body else None
            payload = await route.handler(self.service, Call(params, query, body))
        except ApiError as exc:
            return Answer(error=exc)
        except ClientGone:
            raise
        except Exception:
            log.exception("%s failed in the emulator", rpc)
            return Answer(error=ApiError("INTERNAL", "The emulator failed to serve this request."))
        lost = self.faults.drop(rpc)
        if lost is not None:
            return Answer(lost=lost)
        return Answer(payload=fieldmask.prune(payload, mask))

    async def _injected(self, rpc: str) -> ApiError | None:
        """Apply the method's injected latency; the error to answer instead of serving, if one is drawn."""
        delay = self.faults.latency(rpc)
        if delay:
            await asyncio.sleep(delay)
        code = self.faults.error_code(rpc)
        if code is None:
            return None
        return ApiError(STATUS_FOR_HTTP[code], f"Injected fault: {STATUS_FOR_HTTP[code]} (emulator).")


LOST = ApiError("UNAVAILABLE", "Injected fault: the answer was lost after the work was done.")
