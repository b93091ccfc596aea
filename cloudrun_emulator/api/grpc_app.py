"""The gRPC surface: Cloud Run v2 Jobs, Executions and Tasks, google.longrunning Operations, Logging's
ListLogEntries, served beside the HTTP/JSON app from the same dispatcher.

Each gRPC method is transcoded to the HTTP call Google's own ``google.api.http`` rule binds it to (the rules
the GAPIC REST transports carry: path fields into the URI, the ``body`` field or the rest of the request into
the body, other fields into the query), matched by the same router and served by the same dispatcher, so
both transports answer from one state with one set of faults and counts. The JSON answer is parsed into the
method's response message, unknown fields rejected. Errors carry a ``google.rpc.Status`` (with its
``BadRequest`` details) in ``grpc-status-details-bin``, as Google's gRPC endpoints send them.

Messages are (de)serialized with grpc's generic handlers and the protobuf classes of google-cloud-run,
googleapis-common-protos and google-cloud-logging; nothing is generated here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import run_v2
from google.cloud.logging_v2 import types as logging_types
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from cloudrun_emulator.api.rpc import LOST, ROUTER, Dispatcher
from cloudrun_emulator.errors import ApiError, invalid

_FIELD = re.compile(r"\{([\w.]+)\}")


def _pb(message: Any) -> type[Message]:
    """The protobuf class of a proto-plus message type."""
    found: type[Message] = message.pb()
    return found


@dataclass(frozen=True)
class Method:
    """One gRPC method and the HTTP rule it is transcoded with (``uri`` relative to ``/v2/``)."""

    service: str
    name: str
    request: type[Message]
    response: type[Message]
    verb: str
    uri: str
    body: str | None = None


_RUN = "google.cloud.run.v2."
_OP = operations_pb2.Operation
_OPS = "google.longrunning.Operations"
METHODS: Sequence[Method] = (
    Method(_RUN + "Jobs", "CreateJob", _pb(run_v2.CreateJobRequest), _OP, "POST", "{parent}/jobs", "job"),
    Method(_RUN + "Jobs", "GetJob", _pb(run_v2.GetJobRequest), _pb(run_v2.Job), "GET", "{name}"),
    Method(
        _RUN + "Jobs", "ListJobs", _pb(run_v2.ListJobsRequest), _pb(run_v2.ListJobsResponse), "GET", "{parent}/jobs"
    ),
    Method(_RUN + "Jobs", "UpdateJob", _pb(run_v2.UpdateJobRequest), _OP, "PATCH", "{job.name}", "job"),
    Method(_RUN + "Jobs", "DeleteJob", _pb(run_v2.DeleteJobRequest), _OP, "DELETE", "{name}"),
    Method(_RUN + "Jobs", "RunJob", _pb(run_v2.RunJobRequest), _OP, "POST", "{name}:run", "*"),
    Method(
        _RUN + "Jobs",
        "GetIamPolicy",
        iam_policy_pb2.GetIamPolicyRequest,
        policy_pb2.Policy,
        "GET",
        "{resource}:getIamPolicy",
    ),
    Method(
        _RUN + "Jobs",
        "SetIamPolicy",
        iam_policy_pb2.SetIamPolicyRequest,
        policy_pb2.Policy,
        "POST",
        "{resource}:setIamPolicy",
        "*",
    ),
    Method(
        _RUN + "Jobs",
        "TestIamPermissions",
        iam_policy_pb2.TestIamPermissionsRequest,
        iam_policy_pb2.TestIamPermissionsResponse,
        "POST",
        "{resource}:testIamPermissions",
        "*",
    ),
    Method(
        _RUN + "Executions", "GetExecution", _pb(run_v2.GetExecutionRequest), _pb(run_v2.Execution), "GET", "{name}"
    ),
    Method(
        _RUN + "Executions",
        "ListExecutions",
        _pb(run_v2.ListExecutionsRequest),
        _pb(run_v2.ListExecutionsResponse),
        "GET",
        "{parent}/executions",
    ),
    Method(_RUN + "Executions", "DeleteExecution", _pb(run_v2.DeleteExecutionRequest), _OP, "DELETE", "{name}"),
    Method(
        _RUN + "Executions", "CancelExecution", _pb(run_v2.CancelExecutionRequest), _OP, "POST", "{name}:cancel", "*"
    ),
    Method(_RUN + "Tasks", "GetTask", _pb(run_v2.GetTaskRequest), _pb(run_v2.Task), "GET", "{name}"),
    Method(
        _RUN + "Tasks",
        "ListTasks",
        _pb(run_v2.ListTasksRequest),
        _pb(run_v2.ListTasksResponse),
        "GET",
        "{parent}/tasks",
    ),
    Method(
        _OPS,
        "ListOperations",
        operations_pb2.ListOperationsRequest,
        operations_pb2.ListOperationsResponse,
        "GET",
        "{name}/operations",
    ),
    Method(_OPS, "GetOperation", operations_pb2.GetOperationRequest, _OP, "GET", "{name}"),
    Method(_OPS, "DeleteOperation", operations_pb2.DeleteOperationRequest, empty_pb2.Empty, "DELETE", "{name}"),
    Method(_OPS, "WaitOperation", operations_pb2.WaitOperationRequest, _OP, "POST", "{name}:wait", "*"),
    Method(
        "google.logging.v2.LoggingServiceV2",
        "ListLogEntries",
        _pb(logging_types.ListLogEntriesRequest),
        _pb(logging_types.ListLogEntriesResponse),
        "POST",
        "entries:list",
        "*",
    ),
)


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

    path = "/v2/" + _FIELD.sub(path_value, method.uri)
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
            by_service.setdefault(method.service, {})[method.name] = grpc.unary_unary_rpc_method_handler(
                self._behaviour(method),
                request_deserializer=method.request.FromString,
                response_serializer=method.response.SerializeToString,
            )
        return [grpc.method_handlers_generic_handler(s, table) for s, table in by_service.items()]

    def _behaviour(self, method: Method) -> Any:
        async def behaviour(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            try:
                return await self._answer(method, request, context)
            except ApiError as exc:
                code, trailer = _status_of(exc)
                # abort() ends the call by raising.
                await context.abort(code, exc.message, trailing_metadata=trailer)
                raise

        return behaviour

    async def _answer(self, method: Method, request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        call = transcode(method, request)
        found = ROUTER.match(call.verb, call.path)
        if found is None:
            field = _FIELD.search(method.uri)
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
        return json_format.ParseDict(answer.payload, method.response())
