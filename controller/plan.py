"""Planning: a validated batch + the job catalog -> the launches that will run it. Pure: no I/O.

A launch is one Cloud Run execution. Per-item launches carry one item's overrides; packed launches carry
many items of the same job as the tasks of one execution, each task finding its item by
``CLOUD_RUN_TASK_INDEX`` in a manifest (see ``jobs/runner``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

from controller import limits
from controller.catalog import Catalog, JobDefinition
from controller.gc_pause import gc_paused
from controller.spec import Batch, Item

MANIFEST_SCHEMA = "fanout.manifest/v1"
MANIFEST_CHUNK = 100  # items per manifest object: each task downloads one small chunk, not the whole list
# Env vars the controller sets on every execution it starts.
ENV_LAUNCH_KEY = "FANOUT_LAUNCH_KEY"
ENV_BATCH_ID = "FANOUT_BATCH_ID"
ENV_MANIFEST = "FANOUT_MANIFEST"
ENV_MANIFEST_CHUNK = "FANOUT_MANIFEST_CHUNK"
ENV_RESULTS_URI = "FANOUT_RESULTS_URI"  # where the runner stores item results (controller.results)
ENV_ITEM_KEY = "FANOUT_ITEM_KEY"
ENV_ATTEMPT = "FANOUT_ATTEMPT"  # the controller-side attempt (from 1) of a retry launch; absent on the first
ENV_RESULT_FILE = "FANOUT_RESULT_FILE"  # where a task writes its JSON result (controller.results)
ENV_RESULT_DIR = "FANOUT_RESULT_DIR"  # the item's results folder in a one-off task: <task index>.json goes there
# One-off images have no runner to upload a result: their jobs mount the batch's results folder (a Cloud
# Storage volume, only-dir=<prefix><batch>/results) here, so a file written under it is the result object.
RESULTS_VOLUME = "fanout-results"
RESULTS_MOUNT_PATH = "/fanout/results"
# The bucket name a local report folder goes by in one-off jobs' volumes; the emulator maps it to the folder.
LOCAL_RESULTS_BUCKET = "fanout-local-reports"


class Mode(StrEnum):
    AUTO = "auto"  # pack items of packable jobs when there are at least two that can share an execution
    PACKED = "packed"  # pack everything that can be packed; refuse items of jobs that cannot
    PER_ITEM = "per-item"  # one execution per item


class PlanError(Exception):
    """The batch cannot be planned as asked (e.g. --mode packed with a job that has no runner)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("cannot plan the batch:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class ResultsVolume:
    """Where one-off tasks' results go: a bucket and the batch's results folder in it (the ``only-dir``)."""

    bucket: str
    folder: str


@dataclass(frozen=True, slots=True)
class OneOffJob:
    """A job the controller creates for items that give an image and a command instead of a job name."""

    name: str
    image: str
    command: tuple[str, ...]
    cpu: str
    memory: str
    max_retries: int
    secret_env: tuple[tuple[str, str, str], ...]
    results: ResultsVolume | None = None  # mounted at RESULTS_MOUNT_PATH
    parallelism: int = 0  # 0: Cloud Run runs as many tasks at once as it can


@dataclass(frozen=True, slots=True)
class Launch:
    """One execution to start: the job, the RunJob overrides, and the items it carries."""

    index: int
    key: str  # idempotency key, carried into the execution as FANOUT_LAUNCH_KEY
    job: str
    packed: bool
    items: tuple[Item, ...]
    args: tuple[str, ...] | None  # None: keep the job's args
    clear_args: bool
    env: tuple[tuple[str, str], ...]
    secret_env: tuple[tuple[str, str, str], ...]
    sensitive_env: tuple[tuple[str, str], ...]
    task_count: int
    timeout_seconds: float | None
    manifest: str | None  # URL prefix of the manifest chunks (packed launches)
    cpu: str = "1"  # the job's limits, which a task is billed for (controller.pricing)
    memory: str = "512Mi"
    parallelism: int = 0  # the job's; RunJob cannot override it (0: as many tasks at once as Cloud Run can)
    attempt: int = 1  # the controller-side attempt of its items (controller.policy); above 1: a retry launch

    @property
    def concurrent_tasks(self) -> int:
        """The most tasks of this launch that can run at once: its task count, capped by the job's parallelism."""
        return min(self.task_count, self.parallelism or self.task_count)


@dataclass(frozen=True, slots=True)
class Plan:
    batch: Batch
    mode: Mode
    launches: tuple[Launch, ...]
    one_off_jobs: tuple[OneOffJob, ...]
    max_running_tasks: int | None = None  # the batch-wide cap on tasks running at once

    @property
    def task_total(self) -> int:
        return sum(launch.task_count for launch in self.launches)

    @property
    def waves(self) -> int:
        """How many rounds of launches the cap makes if tasks took equal time: launches in spec order, each
        round as many as fit the cap together (1 without a cap)."""
        if self.max_running_tasks is None or not self.launches:
            return 1 if self.launches else 0
        waves, used = 1, 0
        for launch in self.launches:
            if used + launch.concurrent_tasks > self.max_running_tasks:
                waves, used = waves + 1, 0
            used += launch.concurrent_tasks
        return waves


def launch_key(batch_id: str, index: int) -> str:
    return f"{batch_id}/{index:05d}"


def manifest_chunks(launch: Launch, chunk: int = MANIFEST_CHUNK) -> Iterator[tuple[str, bytes]]:
    """The manifest objects of a packed launch: (name relative to ``launch.manifest``, JSON bytes)."""
    for start in range(0, len(launch.items), chunk):
        items = launch.items[start : start + chunk]
        body = {
            "schema": MANIFEST_SCHEMA,
            "launch": launch.key,
            "offset": start,
            "items": [{"key": item.key, "args": list(item.args or ()), "env": dict(item.env)} for item in items],
        }
        yield f"{start // chunk:05d}.json", json.dumps(body, separators=(",", ":")).encode()


def retry_launch(template: Launch, items: tuple[Item, ...], *, index: int, key: str, attempt: int) -> Launch:
    """``items`` of ``template`` (a launch of their job, timeout and resources) launched again as attempt
    ``attempt``, under a key of its own. A packed template makes a packed launch of just those items, with a
    manifest of its own beside the template's (``manifest_chunks`` writes it); any other carries its one item."""
    env = [(name, key if name == ENV_LAUNCH_KEY else value) for name, value in template.env if name != ENV_ATTEMPT]
    env.append((ENV_ATTEMPT, str(attempt)))
    if not template.packed:
        return replace(template, index=index, key=key, env=tuple(env), attempt=attempt)
    assert template.manifest is not None
    manifest = f"{template.manifest.rsplit('/', 1)[0]}/{index:05d}"
    env = [(name, manifest if name == ENV_MANIFEST else value) for name, value in env]
    return replace(
        template,
        index=index,
        key=key,
        items=items,
        env=tuple(env),
        task_count=len(items),
        manifest=manifest,
        attempt=attempt,
    )


def one_off_job_for(
    item: Item, results: ResultsVolume | None = None, max_running_tasks: int | None = None
) -> OneOffJob:
    """The job an image/command item runs on.

    The job's command is only the program (``command[0]``); the rest of the command travels with each run
    as args, which RunJob can override. So items that share image, program and resources share one job
    however their arguments differ (Cloud Run allows 1,000 jobs per region: one per item would not do).
    An item of more tasks than ``max_running_tasks`` gets a job whose parallelism is that cap: RunJob cannot
    lower a job's parallelism, and the controller makes this job.
    """
    if item.image is None or not item.command:
        raise ValueError(f"item {item.key!r} names a job, not an image and a command")
    job = OneOffJob(
        name="",
        image=item.image,
        command=item.command[:1],
        cpu=item.cpu or "1",
        memory=item.memory or "512Mi",
        max_retries=item.retries if item.retries is not None else 0,
        secret_env=item.secret_env,
        results=results,
        parallelism=max_running_tasks if max_running_tasks and (item.task_count or 1) > max_running_tasks else 0,
    )
    mount = [results.bucket, results.folder] if results else None
    fields: list[object] = [job.image, job.command, job.cpu, job.memory, job.max_retries, job.secret_env, mount]
    identity = json.dumps([*fields, job.parallelism] if job.parallelism else fields)
    return replace(job, name=f"fanout-oneoff-{hashlib.sha256(identity.encode()).hexdigest()[:16]}")


def one_off_args(item: Item) -> tuple[str, ...]:
    """RunJob args for a one-off item: the rest of its command, then its own args."""
    return (*(item.command or ())[1:], *(item.args or ()))


def _packable(item: Item, job: JobDefinition | None) -> str | None:
    """Why this item cannot be packed, or None if it can."""
    if job is None:
        return "one-off runs (image + command) run one execution per item"
    if not job.packable:
        return f"job {job.name!r} does not run the fanout runner (packable: false in its job.yaml)"
    if (item.task_count or 1) != 1:
        return "an item with task_count > 1 needs its own execution"
    if item.secret_env or item.sensitive_env:
        return "items with secret env values run one per execution, so secrets never go into a manifest"
    return None


def _jobs_of(
    batch: Batch, results: ResultsVolume | None, max_running_tasks: int | None
) -> tuple[dict[str, OneOffJob], list[str]]:
    """The one-off jobs the batch needs, and the job each item runs on, by item index."""
    one_offs: dict[str, OneOffJob] = {}
    job_of_item: list[str] = []
    for item in batch.items:
        if item.job is None:
            one_off = one_off_job_for(item, results, max_running_tasks)
            one_offs.setdefault(one_off.name, one_off)
            job_of_item.append(one_off.name)
        else:
            job_of_item.append(item.job)
    return one_offs, job_of_item


_Groups = dict[tuple[str, float | None], list[Item]]


def _grouped(batch: Batch, catalog: Catalog, job_of_item: list[str], mode: Mode) -> tuple[_Groups, list[Item]]:
    """Items to pack, by job and timeout, and items that run one per execution."""
    groups: _Groups = {}
    single: list[Item] = []
    problems: list[str] = []
    for item, job_name in zip(batch.items, job_of_item, strict=True):
        job = catalog.jobs.get(job_name) if item.job is not None else None
        why_not = _packable(item, job)
        if mode is Mode.PER_ITEM or why_not is not None:
            if mode is Mode.PACKED and why_not is not None:
                problems.append(f"items[{item.index}] ({item.key}): cannot pack: {why_not}")
            single.append(item)
        else:
            groups.setdefault((job_name, item.timeout_seconds), []).append(item)
    if problems:
        raise PlanError(problems)
    if mode is Mode.AUTO:  # packing one item alone gains nothing
        for group_key, items in list(groups.items()):
            if len(items) < 2:
                single.extend(items)
                del groups[group_key]
    return groups, single


def _packed_launch(
    batch: Batch, catalog: Catalog, index: int, job_name: str, unit: list[Item], manifest_root: str
) -> Launch:
    key = launch_key(batch.batch_id, index)
    manifest = f"{manifest_root.rstrip('/')}/{index:05d}"
    job = catalog.jobs[job_name]
    # Resolve default args into the manifest so the job's own args never mix with an item's.
    packed = tuple(i if i.args is not None else replace(i, args=tuple(job.args)) for i in unit)
    return Launch(
        index=index,
        key=key,
        job=job_name,
        packed=True,
        items=packed,
        args=(),
        clear_args=True,
        env=(
            (ENV_LAUNCH_KEY, key),
            (ENV_BATCH_ID, batch.batch_id),
            (ENV_MANIFEST, manifest),
            (ENV_MANIFEST_CHUNK, str(MANIFEST_CHUNK)),
        ),
        secret_env=(),
        sensitive_env=(),
        task_count=len(packed),
        timeout_seconds=packed[0].timeout_seconds,
        manifest=manifest,
        cpu=job.resources.cpu,
        memory=job.resources.memory,
        parallelism=job.parallelism,
    )


def _single_launch(
    batch: Batch, catalog: Catalog, index: int, job_name: str, item: Item, one_offs: dict[str, OneOffJob]
) -> Launch:
    key = launch_key(batch.batch_id, index)
    args = one_off_args(item) if item.job is None else item.args
    resources = catalog.jobs[job_name].resources if job_name in catalog.jobs else None
    parallelism = catalog.jobs[job_name].parallelism if job_name in catalog.jobs else one_offs[job_name].parallelism
    return Launch(
        index=index,
        key=key,
        job=job_name,
        packed=False,
        items=(item,),
        args=args,
        clear_args=args == (),
        env=((ENV_LAUNCH_KEY, key), (ENV_BATCH_ID, batch.batch_id), *item.env),
        secret_env=item.secret_env,
        sensitive_env=item.sensitive_env,
        task_count=item.task_count or (catalog.jobs[job_name].task_count if job_name in catalog.jobs else 1),
        timeout_seconds=item.timeout_seconds,
        manifest=None,
        cpu=resources.cpu if resources else item.cpu or "1",
        memory=resources.memory if resources else item.memory or "512Mi",
        parallelism=parallelism,
    )


def _with_results(launch: Launch, results_root: str, mounted: bool) -> Launch:
    # A packed task finds its item's key in the manifest; an item launched alone is told it.
    key = () if launch.packed else ((ENV_ITEM_KEY, launch.items[0].key),)
    return replace(launch, env=(*launch.env, (ENV_RESULTS_URI, results_root), *key, *_result_paths(launch, mounted)))


def _result_paths(launch: Launch, mounted: bool) -> tuple[tuple[str, str], ...]:
    """Where a one-off task writes its result in the mounted results folder.

    Cloud Run documents ``$(VAR)`` expansion in an env value from "the previous defined environment
    variables in the container" (``EnvVar.value``); ``CLOUD_RUN_TASK_INDEX`` is set by the runtime, not in
    that list, so nothing documents that a value given to every task can name each task's file. An item of
    one task is given its file; an item of several tasks its folder, where each writes
    ``$CLOUD_RUN_TASK_INDEX.json``.
    """
    item = launch.items[0]
    if not mounted or launch.packed or item.job is not None:
        return ()
    folder = f"{RESULTS_MOUNT_PATH}/{item.key}"
    one_file = ((ENV_RESULT_FILE, f"{folder}/0.json"),) if launch.task_count == 1 else ()
    return ((ENV_RESULT_DIR, folder), *one_file)


def _pack_size(job: JobDefinition, max_tasks_per_execution: int, max_running_tasks: int | None) -> int:
    """Items per packed launch: Cloud Run's task limit, and under a running-task cap no more tasks than run
    at once within it, unless the job's own parallelism already keeps the launch within the cap."""
    if max_running_tasks is None or 0 < job.parallelism <= max_running_tasks:
        return max_tasks_per_execution
    return min(max_tasks_per_execution, max_running_tasks)


def _over_cap(launches: list[Launch], max_running_tasks: int | None) -> list[str]:
    """Why a launch cannot keep to the cap: an item whose job runs more of its tasks at once than allowed."""
    if max_running_tasks is None:
        return []
    return [
        f"items[{launch.items[0].index}] ({launch.items[0].key}): job {launch.job!r} would run "
        f"{launch.concurrent_tasks:,} of its {launch.task_count:,} tasks at once (parallelism "
        f"{launch.parallelism or 'unlimited'}), over --max-running-tasks {max_running_tasks:,}; RunJob cannot "
        "lower a job's parallelism: set the job's parallelism to at most the cap, or give fewer tasks"
        for launch in launches
        if launch.concurrent_tasks > max_running_tasks
    ]


def plan(
    batch: Batch,
    catalog: Catalog,
    *,
    mode: Mode = Mode.AUTO,
    manifest_root: str = "",
    max_tasks_per_execution: int = limits.MAX_TASKS_PER_EXECUTION,
    results_root: str = "",
    results_volume: ResultsVolume | None = None,
    max_running_tasks: int | None = None,
) -> Plan:
    """Decide the launches for a batch. ``manifest_root`` is where packed launches' manifests will live
    (``gs://bucket/prefix/<batch>/manifests`` or a local folder), ``results_root`` where item results go
    (given to every launch as ``FANOUT_RESULTS_URI``, with ``FANOUT_ITEM_KEY`` when it carries one item);
    ``results_volume`` the same folder as one-off jobs mount it (``FANOUT_RESULT_FILE`` in their tasks).
    With ``max_running_tasks``, no launch may run more tasks at once than that (PlanError when a job's
    parallelism makes it impossible); the runner then holds launches until running ones leave room."""
    with gc_paused():  # a plan of 100,000 per-item launches is as many new objects that all live on
        one_offs, job_of_item = _jobs_of(batch, results_volume, max_running_tasks)
        groups, single = _grouped(batch, catalog, job_of_item, mode)
        # Launch order follows the spec: a group starts where its first item stands.
        units: list[tuple[int, str, list[Item] | Item]] = [
            (item.index, job_of_item[item.index], item) for item in single
        ]
        for (job_name, _timeout), items in groups.items():
            size = _pack_size(catalog.jobs[job_name], max_tasks_per_execution, max_running_tasks)
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                units.append((chunk[0].index, job_name, chunk))
        units.sort(key=lambda unit: unit[0])
        launches = [
            _packed_launch(batch, catalog, index, job_name, unit, manifest_root)
            if isinstance(unit, list)
            else _single_launch(batch, catalog, index, job_name, unit, one_offs)
            for index, (_, job_name, unit) in enumerate(units)
        ]
        if problems := _over_cap(launches, max_running_tasks):
            raise PlanError(problems)
        if results_root:
            launches = [_with_results(launch, results_root, results_volume is not None) for launch in launches]
        return Plan(
            batch=batch,
            mode=mode,
            launches=tuple(launches),
            one_off_jobs=tuple(one_offs.values()),
            max_running_tasks=max_running_tasks,
        )
