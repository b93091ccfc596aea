"""Routes: Google's REST paths for the emulated RPCs, matched to handlers."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor

from cloudrun_emulator.errors import ApiError
from cloudrun_emulator.records import Wire
from cloudrun_emulator.service import CloudRunService

LOC = r"/v2/projects/(?P<project>[^/:]+)/locations/(?P<location>[^/:]+)"
JOB = LOC + r"/jobs/(?P<job>[^/:]+)"
EXEC = JOB + r"/executions/(?P<execution>[^/:]+)"
OP = LOC + r"/operations/(?P<operation>[^/:]+)"


@dataclass(frozen=True)
class Call:
    """One parsed request: path parameters, query parameters (last value wins) and the JSON body."""

    params: dict[str, str]
    query: dict[str, str]
    body: object

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() == "true"

    @property
    def where(self) -> tuple[str, str]:
        return self.params["project"], self.params["location"]


Handler = Callable[[CloudRunService, Call], Awaitable[Wire]]


async def unimplemented(s: CloudRunService, c: Call) -> Wire:
    """The handler of a method the emulator knows but does not emulate: 501 UNIMPLEMENTED."""
    raise ApiError("UNIMPLEMENTED", "This method is not implemented by the local Cloud Run emulator.")


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    rpc: str
    handler: Handler
    response: Descriptor | None
    has_body: bool


def route(
    method: str, pattern: str, rpc: str, handler: Handler, response: Descriptor | None, *, has_body: bool = False
) -> Route:
    return Route(method, re.compile(pattern + r"\Z"), rpc, handler, response, has_body)


def descriptor(message: Any) -> Descriptor:
    """The protobuf descriptor of a proto-plus message type."""
    found: Descriptor = message.pb(message()).DESCRIPTOR
    return found


class Router:
    def __init__(self, *tables: Sequence[Route]) -> None:
        self.routes = [r for table in tables for r in table]

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route for a request, with its path parameters; None for an unknown path or verb."""
        for candidate in self.routes:
            if candidate.method == method:
                found = candidate.pattern.match(path)
                if found:
                    return candidate, found.groupdict()
        return None
