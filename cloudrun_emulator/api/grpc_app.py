"""The gRPC surface: Cloud Run v2 Jobs, Executions and Tasks, google.longrunning Operations, Logging's
ListLogEntries, served beside the HTTP/JSON app from the same dispatcher.

Each gRPC method is transcoded to the HTTP call Google's own ``google.api.http`` rule binds it to
(``methods.py``, the rules the GAPIC REST transports carry: path fields into the URI, the ``body`` field or
the rest of the request into the body, other fields into the query), matched by the same router and served
by the same dispatcher, so both transports answer from one state with one set of faults and counts. The
JSON answer is parsed into the method's response message, unknown fields rejected. Errors carry a
``google.rpc.Status`` (with its ``BadRequest`` details) in ``grpc-status-details-bin``, as Google's gRPC
endpoints send them.

Messages are (de)serialized with grpc's generic handlers and the protobuf classes of google-cloud-run,
googleapis-common-protos and google-cloud-logging; nothing is generated here.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from cloudrun_emulator.api.methods import METHODS, PATH_FIELD, Method
from cloudrun_emulator.api.rpc import LOST, ROUTER, Dispatcher
from cloudrun_emulator.errors import ApiError, invalid

log = logging.getLogger("cloudrun_emulator")


@dataclass(frozen=True)
class Transcoded:
    """A gRPC request as the HTTP call its rule binds it to."""

    verb: str
    path: str
    query: dict[str, str]
    body: object


def transcode(method: Method, request: Message) -> Transcoded:
    """The HTTP call for ``request``; INVALID_ARGUMENT when a path field is empty."""
    fields: dict[str, Any] = json_format.MessageToDict(request)
    used: set[str] = set()

    def path_value(found: re.Match[str]) -> str:
        dotted = found.group(1)
        value: Any = fields
        for part in dotted.split("."):
            value = value.get(part, "") if isinstance(value, dict) else ""
        if not isinstance(value, str) or not value:
            raise invalid(dotted, f"{dotted} is required")
        used.add(dotted.split(".", 1)[0])
        return value

    path = "/v2/" + PATH_FIELD.sub(path_value, method.uri)
    if method.body == "*":
        return Transcoded(method.verb, path, {}, {k: v for k, v in fields.items() if k not in used})
    body = fields.get(method.body) if method.body else None
    rest = {k: v for k, v in fields.items() if k not in used and k != method.body}
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in rest.items() if not isinstance(v, dict)}
    return Transcoded(method.verb, path, query, body)


def _status_of(error: ApiError) -> tuple[grpc.StatusCode, tuple[tuple[str, bytes], ...]]:
    """The gRPC code of an error and its ``google.rpc.Status`` trailer."""
    code = grpc.StatusCode[error.status]
    status = status_pb2.Status(code=code.value[0], message=error.message)
    if error.field_violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in error.field_violations.items()
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    return code, (("grpc-status-details-bin", status.SerializeToString()),)


class GrpcApp:
    """grpc generic handlers for every method in ``METHODS``, served by ``dispatcher``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method in METHODS:
            if method.request is None or method.response is None:
                continue  # not in the installed client libraries: grpc answers UNIMPLEMENTED
            by_service.setdefault(method.service, {})[method.name] = grpc.unary_unary_rpc_method_handler(
                self._behaviour(method, method.response),
                request_deserializer=method.request.FromString,
                response_serializer=method.response.SerializeToString,
            )
        return [grpc.method_handlers_generic_handler(s, table) for s, table in by_service.items()]

    def _behaviour(self, method: Method, response: type[Message]) -> Any:
        full_name = f"/{method.service}/{method.name}"

        async def behaviour(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            started, status = time.perf_counter(), "OK"
            try:
                return json_format.ParseDict(await self._answer(method, request, context), response())
            except ApiError as exc:
                code, trailer = _status_of(exc)
                status = code.name
                # abort() ends the call by raising.
                await context.abort(code, exc.message, trailing_metadata=trailer)
                raise
            except Exception:
                # An answer that does not fit its message is the emulator's bug, answered as the HTTP app does.
                log.exception("%s failed in the emulator", full_name)
                status = "INTERNAL"
                await context.abort(grpc.StatusCode.INTERNAL, "The emulator failed to serve this request.")
                raise
            finally:
                # The HTTP app's request line, for gRPC (-v).
                log.debug("gRPC %s -> %s %.1fms", full_name, status, (time.perf_counter() - started) * 1000)

        return behaviour

    async def _answer(self, method: Method, request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """The JSON answer to ``request``; raises ApiError for an error answer."""
        call = transcode(method, request)
        found = ROUTER.match(call.verb, call.path)
        if found is None:
            field = PATH_FIELD.search(method.uri)
            name = field.group(1) if field else "name"
            raise invalid(name, f"{call.path.removeprefix('/v2/')!r} is not a valid {name} for {method.name}")
        route, params = found
        mask = ""
        for key, value in context.invocation_metadata() or ():
            if key.lower() == "x-goog-fieldmask" and isinstance(value, str):
                mask = value

        async def body() -> object:
            return call.body

        answer = await self.dispatcher.serve(route, params, call.query, body, mask)
        if answer.lost is not None:
            # A lost answer reaches a gRPC client as UNAVAILABLE whether the server answered 503 or dropped
            # the connection.
            raise LOST
        if answer.error is not None:
            raise answer.error
        return answer.payload
