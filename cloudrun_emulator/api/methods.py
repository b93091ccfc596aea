"""The emulated RPCs: for each, its gRPC service and method, request and response messages, and the HTTP
rule Google's ``google.api.http`` annotation binds it to (``uri`` relative to ``/v2/``, ``{field}`` for a
path field, ``body`` the request field sent as the body, ``*`` for the whole request).

The gRPC server (``grpc_app.py``) transcodes with these rules; the discovery document (``discovery.py``) is
written from them. The HTTP routes (``routing.py`` and the resource modules) match the same paths.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.cloud import run_v2
from google.cloud.logging_v2 import types as logging_types
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message

PATH_FIELD = re.compile(r"\{([\w.]+)\}")


def _pb(message: Any) -> type[Message]:
    """The protobuf class of a proto-plus message type."""
    found: type[Message] = message.pb()
    return found


@dataclass(frozen=True)
class Method:
    """One RPC and its HTTP rule. ``request``/``response`` are None for a method whose messages the
    installed client libraries do not have (it is not served over gRPC)."""

    service: str
    name: str
    request: type[Message] | None
    response: type[Message] | None
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
    # Image export status: newer than the installed google-cloud-run, and not emulated (UNIMPLEMENTED).
    Method(_RUN + "Executions", "ExportStatus", None, None, "GET", "{name}/{operationId}:exportStatus"),
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
