"""Request validation: bodies checked against the v2 message types and Cloud Run's rules, page parameters.

Everything here takes request data and returns typed records or raises ``ApiError``; nothing holds state.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from google.cloud import run_v2
from google.protobuf import json_format

from cloudrun_emulator import limits
from cloudrun_emulator.errors import ApiError, invalid
from cloudrun_emulator.records import (
    Container,
    EnvVar,
    GcsVolume,
    JobSpec,
    SecretRef,
    TaskTemplate,
    VolumeMount,
    Wire,
)

MAX_LIST_PAGE_SIZE = 1000  # Cloud Run documents no maximum for jobs/executions/tasks.list; we cap here.
DEFAULT_LIST_PAGE_SIZE = 100
OPERATIONS_MAX_PAGE_SIZE = 100  # operations.list: "Requested page size cannot exceed 100."

_OUTPUT_ONLY_JOB_FIELDS = (
    "uid",
    "generation",
    "createTime",
    "updateTime",
    "deleteTime",
    "expireTime",
    "creator",
    "lastModifier",
    "observedGeneration",
    "terminalCondition",
    "conditions",
    "executionCount",
    "latestCreatedExecution",
    "reconciling",
    "satisfiesPzs",
    "etag",
    "name",
)


def parse_message(message_type: Any, body: object, what: str) -> Wire:
    """Validate a JSON body against a run_v2 message type; returns it normalised (camelCase, enum names)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        message = "Invalid JSON payload received. Expected an object."
        raise invalid(what, message, message)
    pb = message_type.pb(message_type())
    try:
        json_format.ParseDict(body, pb, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        message = f"Invalid JSON payload received. {exc}"
        raise invalid(what, message, message) from None
    parsed: Wire = json_format.MessageToDict(pb, preserving_proto_field_name=False)
    return parsed


def parse_job(body: object) -> JobSpec:
    """A Job request body, validated as Cloud Run validates it, with Cloud Run's defaults applied."""
    wire = parse_message(run_v2.Job, body, "job")
    for key in _OUTPUT_ONLY_JOB_FIELDS:
        wire.pop(key, None)
    template = wire.get("template")
    if not template or not template.get("template", {}).get("containers"):
        raise invalid(
            "job.template.template.containers",
            "a job needs at least one container",
            "The request has errors: job.template.template.containers: at least one is required.",
        )
    task_wire = template["template"]
    problems = _container_problems(task_wire["containers"])
    problems.update(_volume_problems(task_wire))
    task_count = template.get("taskCount", 1) or 1
    if not 1 <= task_count <= limits.MAX_TASKS_PER_EXECUTION:
        problems["job.template.task_count"] = f"must be between 1 and {limits.MAX_TASKS_PER_EXECUTION}"
    if template.get("parallelism", 0) < 0:
        problems["job.template.parallelism"] = "must be 0 or more"
    retries = task_wire.get("maxRetries", limits.DEFAULT_MAX_RETRIES)
    if not 0 <= retries <= limits.MAX_RETRIES:
        problems["job.template.template.max_retries"] = f"must be between 0 and {limits.MAX_RETRIES}"
    if "timeout" in task_wire:
        problem = limits.timeout_problem(task_wire["timeout"])
        if problem:
            problems["job.template.template.timeout"] = problem
    _raise_problems(problems)
    template["taskCount"] = task_count
    task_wire.setdefault("maxRetries", limits.DEFAULT_MAX_RETRIES)
    task_wire.setdefault("timeout", limits.DEFAULT_TASK_TIMEOUT)
    return JobSpec(
        task_count=task_count,
        parallelism=int(template.get("parallelism") or 0),
        labels=dict(wire.get("labels", {})),
        execution_labels=dict(template.get("labels", {})),
        execution_annotations=dict(template.get("annotations", {})),
        task=task_template(task_wire),
        wire=wire,
    )


def _container_problems(containers: list[Wire]) -> dict[str, str]:
    problems: dict[str, str] = {}
    if len(containers) > limits.MAX_CONTAINERS:
        problems["job.template.template.containers"] = f"at most {limits.MAX_CONTAINERS} containers"
    for i, container in enumerate(containers):
        where = f"job.template.template.containers[{i}]"
        if not container.get("image"):
            problems[f"{where}.image"] = "an image is required"
        for j, var in enumerate(container.get("env", [])):
            problem = limits.env_name_problem(var.get("name", ""))
            if problem:
                problems[f"{where}.env[{j}].name"] = problem
        if len(container.get("env", [])) > limits.MAX_ENV_VARS_PER_CONTAINER:
            problems[f"{where}.env"] = f"at most {limits.MAX_ENV_VARS_PER_CONTAINER} environment variables"
        container.setdefault("resources", {"limits": dict(limits.DEFAULT_RESOURCES)})
    return problems


# "Cloud Run does not allow you to mount a volume at /dev, /proc and /sys, or on their subdirectories."
_DISALLOWED_MOUNT_ROOTS = ("/dev", "/proc", "/sys")


def _volume_problems(task_wire: Wire) -> dict[str, str]:
    """Mounts must name a volume of the task and an absolute path Cloud Run allows."""
    problems: dict[str, str] = {}
    volumes = {volume.get("name", "") for volume in task_wire.get("volumes", [])}
    for i, volume in enumerate(task_wire.get("volumes", [])):
        if "gcs" in volume and not volume["gcs"].get("bucket"):
            problems[f"job.template.template.volumes[{i}].gcs.bucket"] = "a bucket is required"
    for i, container in enumerate(task_wire["containers"]):
        for j, mount in enumerate(container.get("volumeMounts", [])):
            where = f"job.template.template.containers[{i}].volume_mounts[{j}]"
            path = mount.get("mountPath", "")
            if mount.get("name", "") not in volumes:
                problems[f"{where}.name"] = f"no volume named {mount.get('name', '')!r} in the task template"
            if not path.startswith("/"):
                problems[f"{where}.mount_path"] = "must be an absolute path"
            elif any(path == root or path.startswith(root + "/") for root in _DISALLOWED_MOUNT_ROOTS):
                problems[f"{where}.mount_path"] = "volumes cannot be mounted at /dev, /proc or /sys"
    return problems


def _raise_problems(problems: dict[str, str]) -> None:
    if problems:
        raise ApiError(
            "INVALID_ARGUMENT",
            "The request has errors: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
            field_violations=problems,
        )


def task_template(wire: Wire) -> TaskTemplate:
    """The typed view of a validated v2 ``TaskTemplate``."""
    return TaskTemplate(
        containers=tuple(_container(c) for c in wire.get("containers", [])),
        max_retries=int(wire.get("maxRetries", limits.DEFAULT_MAX_RETRIES)),
        timeout_seconds=limits.parse_duration(wire.get("timeout", limits.DEFAULT_TASK_TIMEOUT)),
        wire=wire,
        gcs_volumes=tuple(_gcs_volume(v) for v in wire.get("volumes", ()) if "gcs" in v),
    )


def _gcs_volume(wire: Wire) -> GcsVolume:
    gcs = wire["gcs"]
    options = dict(option.partition("=")[::2] for option in gcs.get("mountOptions", ()))
    return GcsVolume(
        name=wire.get("name", ""),
        bucket=gcs.get("bucket", ""),
        read_only=bool(gcs.get("readOnly", False)),
        only_dir=options.get("only-dir", "").strip("/"),
        implicit_dirs=options.get("implicit-dirs", "false") in ("", "true"),
    )


def _container(wire: Wire) -> Container:
    return Container(
        image=wire.get("image", ""),
        command=tuple(wire.get("command", ())),
        args=tuple(wire.get("args", ())),
        env=tuple(_env_var(v) for v in wire.get("env", ())),
        working_dir=wire.get("workingDir", ""),
        volume_mounts=tuple(
            VolumeMount(m.get("name", ""), m.get("mountPath", "")) for m in wire.get("volumeMounts", ())
        ),
    )


def _env_var(wire: Wire) -> EnvVar:
    if "value" in wire or "valueSource" not in wire:
        return EnvVar(wire.get("name", ""), wire.get("value", ""))
    ref = wire["valueSource"].get("secretKeyRef", {})
    return EnvVar(wire.get("name", ""), secret=SecretRef(ref.get("secret", ""), ref.get("version", "latest")))


def parse_run_request(body: object) -> Wire:
    """A RunJob request body, normalised."""
    return parse_message(run_v2.RunJobRequest, body, "RunJobRequest")


def apply_overrides(template: TaskTemplate, overrides: Wire, task_count: int) -> tuple[TaskTemplate, int]:
    """The execution's task template and task count: the job's, with RunJob overrides applied."""
    wire = copy.deepcopy(template.wire)
    containers = wire["containers"]
    problems: dict[str, str] = {}
    for i, override in enumerate(overrides.get("containerOverrides", [])):
        _override_container(containers, override, f"overrides.container_overrides[{i}]", problems)
    if "taskCount" in overrides:
        count = overrides["taskCount"]
        if not 0 <= count <= limits.MAX_TASKS_PER_EXECUTION:
            problems["overrides.task_count"] = f"must be between 0 and {limits.MAX_TASKS_PER_EXECUTION}"
        elif count:
            task_count = count
    if "timeout" in overrides:
        problem = limits.timeout_problem(overrides["timeout"])
        if problem:
            problems["overrides.timeout"] = problem
        else:
            wire["timeout"] = overrides["timeout"]
    _raise_problems(problems)
    return task_template(wire), task_count


def _override_container(containers: list[Wire], override: Wire, where: str, problems: dict[str, str]) -> None:
    name = override.get("name", "")
    target = next((c for c in containers if c.get("name", "") == name), None) if name else containers[0]
    if target is None:
        problems[f"{where}.name"] = f"no container named {name!r} in the job"
        return
    if override.get("clearArgs") and override.get("args"):
        problems[f"{where}.clear_args"] = "clear_args cannot be set together with args"
        return
    if override.get("clearArgs"):
        target.pop("args", None)
    elif override.get("args"):
        target["args"] = list(override["args"])
    if override.get("env"):
        merged = {var["name"]: var for var in target.get("env", [])}
        for j, var in enumerate(override["env"]):
            problem = limits.env_name_problem(var.get("name", ""))
            if problem:
                problems[f"{where}.env[{j}].name"] = problem
            merged[var.get("name", "")] = var
        target["env"] = list(merged.values())


def check_etag(given: object, current: str, what: str) -> None:
    """ABORTED when the request names an etag that is no longer the resource's."""
    if given and given != current:
        raise ApiError("ABORTED", f"The etag of {what} does not match: it was modified.")


def page_size(raw: object, *, maximum: int = MAX_LIST_PAGE_SIZE, default: int = DEFAULT_LIST_PAGE_SIZE) -> int:
    """The page size a List request asks for, capped."""
    if raw in (None, ""):
        return default
    try:
        size = int(str(raw))
    except ValueError:
        raise invalid("page_size", f"page_size must be an integer, got {raw!r}") from None
    if size < 0:
        raise invalid("page_size", "page_size must not be negative")
    return min(size, maximum) if size else default


def make_token(kind: str, value: int) -> str:
    """An opaque page token for a position in a list."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def token_position(token: str, kind: str) -> int | None:
    """The position a page token stands for; None for the first page."""
    if not token:
        return None
    try:
        got, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if got != kind:
            raise ValueError(got)
        return int(value)
    except ValueError:
        raise invalid("page_token", "invalid page token", "Invalid page token.") from None
