"""Rendering to the Cloud Run Admin API v2 wire format: every JSON shape the emulator answers with.

Field names and enum values are those of the ``google.cloud.run_v2`` message types; the tests parse every
rendering with them, unknown fields rejected. ``enums_as_ints`` turns enum names into numbers for clients that
ask for ``$alt=json;enum-encoding=int``.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from cloudrun_emulator.errors import RPC_CODE
from cloudrun_emulator.records import EXECUTION_TYPE, Execution, Job, Operation, State, Task, Wire
from cloudrun_emulator.timefmt import rfc3339

# Messages Cloud Run itself writes for failed tasks (seen in `gcloud run jobs executions describe` output).
MSG_NONZERO = "The container exited with an error."
MSG_TIMEOUT = "The configured timeout was reached."
MSG_CANCELLED = "The task was cancelled."
CREATOR = "emulator@localhost"
_COMPLETION_STATUS = {
    State.PENDING: "EXECUTION_PENDING",
    State.RUNNING: "EXECUTION_RUNNING",
    State.SUCCEEDED: "EXECUTION_SUCCEEDED",
    State.FAILED: "EXECUTION_FAILED",
    State.CANCELLED: "EXECUTION_CANCELLED",
}
_TASK_TEMPLATE_FIELDS = ("serviceAccount", "executionEnvironment", "volumes", "encryptionKey", "vpcAccess")


def etag(uid: str, version: int) -> str:
    """A strong etag that changes with every version of a resource."""
    return '"' + hashlib.sha1(f"{uid}:{version}".encode(), usedforsecurity=False).hexdigest()[:20] + '"'


def job_etag(job: Job) -> str:
    return etag(job.uid, job.generation)


def execution_etag(execution: Execution) -> str:
    return etag(execution.uid, execution.version)


def _log_uri(project: str, execution: str, task_index: int | None = None) -> str:
    uri = (
        "https://console.cloud.google.com/logs/viewer?project="
        f"{project}&advancedFilter=resource.type%3D%22cloud_run_job%22%0A"
        f"labels.%22run.googleapis.com/execution_name%22%3D%22{execution}%22"
    )
    if task_index is not None:
        uri += f"%0Alabels.%22run.googleapis.com/task_index%22%3D%22{task_index}%22"
    return uri


# ------------------------------------------------------------------ jobs


def job(rec: Job) -> Wire:
    """The Job resource as the API returns it."""
    out = copy.deepcopy(rec.spec.wire)
    out.update(
        name=rec.name,
        uid=rec.uid,
        generation=str(rec.generation),
        createTime=rfc3339(rec.create_time),
        updateTime=rfc3339(rec.update_time),
        creator=CREATOR,
        lastModifier=CREATOR,
        observedGeneration=str(rec.generation),
        terminalCondition={
            "type": "Ready",
            "state": "CONDITION_SUCCEEDED",
            "lastTransitionTime": rfc3339(rec.update_time),
        },
        etag=job_etag(rec),
    )
    out.setdefault("launchStage", "GA")
    if rec.execution_count:
        out["executionCount"] = rec.execution_count
    # Cloud Run always answers with this field, an empty object until the job first runs (prefect-gcp's
    # JobV2.get reads it unconditionally while it waits for a job it just created to be ready).
    out["latestCreatedExecution"] = {}
    if rec.executions:
        latest = rec.executions[-1]
        ref: Wire = {
            "name": latest.exec_id,
            "createTime": rfc3339(latest.create_time),
            "completionStatus": _COMPLETION_STATUS[latest.state],
        }
        if latest.completion_time is not None:
            ref["completionTime"] = rfc3339(latest.completion_time)
        out["latestCreatedExecution"] = ref
    return out


def job_preview(name: str, spec_wire: Wire) -> Wire:
    """What a ``validateOnly`` request answers: the job as it would be created."""
    out = copy.deepcopy(spec_wire)
    out["name"] = name
    return out


# ------------------------------------------------------------ executions


def execution(ex: Execution) -> Wire:
    """The Execution resource as the API returns it."""
    out: Wire = {
        "name": ex.name,
        "uid": ex.uid,
        "creator": CREATOR,
        "generation": "1",
        "createTime": rfc3339(ex.create_time),
        "updateTime": rfc3339(ex.completion_time or ex.start_time or ex.create_time),
        "launchStage": ex.job.spec.wire.get("launchStage", "GA"),
        "job": ex.job.job_id,
        "parallelism": ex.parallelism,
        "taskCount": ex.task_count,
        "template": ex.template.wire,
        "reconciling": not ex.finished,
        "conditions": _execution_conditions(ex),
        "observedGeneration": "1",
        "logUri": _log_uri(ex.job.project, ex.exec_id),
        "etag": execution_etag(ex),
    }
    if ex.labels:
        out["labels"] = ex.labels
    if ex.annotations:
        out["annotations"] = ex.annotations
    if ex.start_time is not None:
        out["startTime"] = rfc3339(ex.start_time)
    if ex.completion_time is not None:
        out["completionTime"] = rfc3339(ex.completion_time)
    for key, value in (
        ("runningCount", ex.running),
        ("succeededCount", ex.succeeded),
        ("failedCount", ex.failed),
        ("cancelledCount", ex.cancelled),
        ("retriedCount", ex.retried),
    ):
        if value:
            out[key] = value
    return out


def execution_preview(job_id: str, template: Wire, task_count: int) -> Wire:
    """What a ``validateOnly`` RunJob answers: the execution as it would start."""
    return {"job": job_id, "template": template, "taskCount": task_count}


def _execution_conditions(ex: Execution) -> list[Wire]:
    created = rfc3339(ex.create_time)
    started = rfc3339(ex.start_time) if ex.start_time else created
    if ex.state == State.PENDING:
        pending = {"state": "CONDITION_PENDING", "lastTransitionTime": created}
        return [
            {"type": "ResourcesAvailable", **pending},
            {"type": "Started", **pending},
            {"type": "Completed", **pending},
        ]
    ended = rfc3339(ex.completion_time) if ex.completion_time else started
    out: list[Wire] = [
        {"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": started},
        {"type": "Started", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": started},
        {"type": "Completed", "lastTransitionTime": ended, **_execution_completed(ex)},
    ]
    if ex.retried:
        out.append(
            {
                "type": "Retry",
                "state": "CONDITION_SUCCEEDED",
                "lastTransitionTime": ended,
                "message": f"{ex.retried} task(s) retried.",
            }
        )
    return out


def _execution_completed(ex: Execution) -> Wire:
    if ex.state == State.RUNNING and ex.cancelling:
        return {
            "state": "CONDITION_RECONCILING",
            "executionReason": "CANCELLING",
            "message": "The execution is being cancelled.",
        }
    if ex.state == State.RUNNING:
        return {"state": "CONDITION_PENDING"}
    if ex.state == State.SUCCEEDED:
        seconds = (ex.completion_time or 0) - (ex.start_time or 0)
        return {"state": "CONDITION_SUCCEEDED", "message": f"Execution completed successfully in {seconds:.2f}s."}
    if ex.state == State.CANCELLED:
        return {"state": "CONDITION_FAILED", "executionReason": "CANCELLED", "message": "The execution was cancelled."}
    failed: Wire = {"state": "CONDITION_FAILED", "severity": "ERROR", "message": ex.first_failure}
    if ex.first_failure_reason:
        failed["executionReason"] = ex.first_failure_reason
    return failed


# ----------------------------------------------------------------- tasks


def task(ex: Execution, rec: Task) -> Wire:
    """The Task resource as the API returns it."""
    template = ex.template.wire
    out: Wire = {
        "name": rec.name,
        "uid": rec.uid,
        "generation": "1",
        "createTime": rfc3339(ex.create_time),
        "updateTime": rfc3339(rec.completion_time or rec.start_time or ex.create_time),
        "job": ex.job.job_id,
        "execution": ex.exec_id,
        "containers": template.get("containers", []),
        "maxRetries": ex.template.max_retries,
        "timeout": template["timeout"],
        "reconciling": rec.state in (State.PENDING, State.RUNNING),
        "conditions": _task_conditions(ex, rec),
        "observedGeneration": "1",
        "index": rec.index,
        "logUri": _log_uri(ex.job.project, ex.exec_id, rec.index),
        "etag": etag(rec.uid, rec.version),
    }
    for key in _TASK_TEMPLATE_FIELDS:
        if key in template:
            out[key] = template[key]
    if ex.labels:
        out["labels"] = ex.labels
    if rec.scheduled_time is not None:
        out["scheduledTime"] = rfc3339(rec.scheduled_time)
    if rec.start_time is not None:
        out["startTime"] = rfc3339(rec.start_time)
    if rec.completion_time is not None:
        out["completionTime"] = rfc3339(rec.completion_time)
    if rec.retried:
        out["retried"] = rec.retried
    if rec.exit_code is not None or rec.status_code != "OK":
        out["lastAttemptResult"] = _attempt_result(rec)
    return out


def _attempt_result(rec: Task) -> Wire:
    status: Wire = {}
    if rec.status_code != "OK":
        status = {"code": RPC_CODE[rec.status_code], "message": rec.status_message}
    result: Wire = {"status": status}
    if rec.exit_code:
        result["exitCode"] = rec.exit_code
    return result


def _task_conditions(ex: Execution, rec: Task) -> list[Wire]:
    when = rfc3339(rec.completion_time or rec.start_time or ex.create_time)
    if rec.state == State.PENDING:
        return [
            {"type": "Started", "state": "CONDITION_PENDING", "lastTransitionTime": when},
            {"type": "Completed", "state": "CONDITION_PENDING", "lastTransitionTime": when},
        ]
    return [_task_started(ex, rec, when), {"type": "Completed", "lastTransitionTime": when, **_task_completed(rec)}]


def _task_started(ex: Execution, rec: Task, when: str) -> Wire:
    if rec.never_started:
        started: Wire = {"type": "Started", "state": "CONDITION_FAILED", "lastTransitionTime": when}
        started.update(severity="ERROR", message=rec.status_message, **_reason(rec))
        return started
    if rec.state == State.CANCELLED and rec.start_time is None:
        return {"type": "Started", "state": "CONDITION_FAILED", "lastTransitionTime": when}
    return {
        "type": "Started",
        "state": "CONDITION_SUCCEEDED",
        "lastTransitionTime": rfc3339(rec.start_time or ex.create_time),
    }


def _task_completed(rec: Task) -> Wire:
    if rec.state == State.RUNNING:
        return {"state": "CONDITION_PENDING"}
    if rec.state == State.SUCCEEDED:
        return {"state": "CONDITION_SUCCEEDED", "message": "Task completed successfully."}
    if rec.state == State.CANCELLED:
        return {"state": "CONDITION_FAILED", "executionReason": "CANCELLED", "message": MSG_CANCELLED}
    failed: Wire = {"state": "CONDITION_FAILED", "severity": "ERROR", "message": rec.status_message, **_reason(rec)}
    if rec.status_message == MSG_NONZERO:
        failed["executionReason"] = "NON_ZERO_EXIT_CODE"
    return failed


def _reason(rec: Task) -> Wire:
    return {"reason": rec.reason} if rec.reason else {}


# ------------------------------------------------------------ operations


def operation(op: Operation) -> Wire:
    """The google.longrunning.Operation, with the Execution or Job as metadata and response."""
    ex = op.execution
    if ex is None:
        body = op.response or {}
        return {
            "name": op.name,
            "metadata": {"@type": op.type_url, **body},
            "done": True,
            "response": {"@type": op.type_url, **body},
        }
    rendered = execution(ex)
    out: Wire = {"name": op.name, "metadata": {"@type": EXECUTION_TYPE, **rendered}}
    if ex.finished:
        out["done"] = True
        if ex.state == State.FAILED:
            out["error"] = {"code": RPC_CODE["FAILED_PRECONDITION"], "message": ex.first_failure}
        else:
            out["response"] = {"@type": EXECUTION_TYPE, **rendered}
    return out


def list_body(key: str, items: list[Wire], token: str) -> Wire:
    """A List response: the items under ``key`` (left out when empty, as proto3 JSON does) and the token."""
    body: Wire = {}
    if items:
        body[key] = items
    if token:
        body["nextPageToken"] = token
    return body


# -------------------------------------------------------------- enum ints

_FIELDS_BY_JSON: dict[str, dict[str, FieldDescriptor]] = {}


def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    cached = _FIELDS_BY_JSON.get(descriptor.full_name)
    if cached is None:
        cached = {f.json_name: f for f in descriptor.fields}
        _FIELDS_BY_JSON[descriptor.full_name] = cached
    return cached


def _enum_number(name: object, field: FieldDescriptor) -> object:
    values = field.enum_type.values_by_name
    return values[name].number if isinstance(name, str) and name in values else name


def _convert(item: Any, field: FieldDescriptor) -> Any:
    if field.enum_type is not None:
        return [_enum_number(x, field) for x in item] if isinstance(item, list) else _enum_number(item, field)
    if field.message_type is not None and not field.message_type.GetOptions().map_entry:
        sub = field.message_type
        return [enums_as_ints(x, sub) for x in item] if isinstance(item, list) else enums_as_ints(item, sub)
    return item


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
    out: Wire = {}
    for key, item in value.items():
        field = fields.get(key)
        out[key] = item if field is None else _convert(item, field)
    return out
