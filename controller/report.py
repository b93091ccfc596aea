"""The run report: one canonical, versioned JSON document per batch, with every item in a terminal state.

Building the report is pure (data in, data out); renderers (HTML, Markdown, terminal) read this model and
storage writes its JSON. Schema changes that remove or rename a field bump ``SCHEMA``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.dataclasses import dataclass

# The schema's state type, re-exported: its table (rank, label, colours) is controller.states.
from controller.states import ItemState as ItemState  # noqa: PLC0414

SCHEMA = "fanout.report/v1"


class BatchStatus(StrEnum):
    SUCCEEDED = "succeeded"  # every item succeeded
    FAILED = "failed"  # at least one item did not succeed
    CANCELLED = "cancelled"  # the batch was cancelled before all items ended


class LaunchStatus(StrEnum):
    """Where one launch (one execution) stands when the report is written."""

    SUCCEEDED = "succeeded"  # the execution ended: every task succeeded
    FAILED = "failed"  # the execution ended: a task failed
    CANCELLED = "cancelled"  # the execution ended: cancelled
    UNFINISHED = "unfinished"  # started, not seen ending (cancellation not confirmed, Cloud Run lost)
    NOT_LAUNCHED = "not_launched"  # never started; ``error`` says why
    UNKNOWN = "unknown"  # RunJob's answer was lost and whether it started could not be checked


ENDED = frozenset({LaunchStatus.SUCCEEDED, LaunchStatus.FAILED, LaunchStatus.CANCELLED})
"""The states of a launch whose execution ran to its end."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# A report holds one ItemResult (and one or more TaskResults) per item, tens of thousands of them: slotted
# dataclasses take about 370 bytes an item where models took 2.4 KB (each model instance carries a __dict__
# and a set of the fields it was given). Pydantic still validates them, in and out of JSON.
_ITEM_CONFIG = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True, kw_only=True, config=_ITEM_CONFIG)
class TaskResult:
    """One Cloud Run task of an item's execution (an item with ``task_count`` > 1 has several)."""

    index: int
    state: ItemState
    exit_code: int | None = None
    attempts: int = 0  # 1 + retries; 0 when the task never started
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_ITEM_CONFIG)
class TailGroup:
    """A run of consecutive ``log_tail`` lines printed by one attempt of one task."""

    task_index: int
    attempt: int  # 0 for the first attempt, as Cloud Run's run.googleapis.com/task_attempt label counts
    lines: int


@dataclass(frozen=True, slots=True, kw_only=True, config=_ITEM_CONFIG)
class Attempt:
    """One controller-side attempt of an item (a launch of its own) and whether it was retried, and why."""

    attempt: int  # from 1
    launch: int | None  # the launch that carried it (None: it never launched)
    state: ItemState
    exit_code: int | None = None
    reason: str | None = None
    retry: str  # "retried: ..." or "not retried: ...", as the item's retry policy decided


@dataclass(frozen=True, slots=True, kw_only=True, config=_ITEM_CONFIG)
class ItemResult:
    """What happened to one item of the batch. ``dataclasses.replace`` makes a changed copy."""

    key: str  # unique within the batch
    index: int  # position in the spec
    job: str
    label: str | None = None
    state: ItemState
    reason: str | None = None  # why it did not succeed, in words
    exit_code: int | None = None  # first non-zero exit code among its tasks, else 0 if it ran
    attempts: int = 0
    launch: int | None = None  # index of the launch that carried it
    execution: str | None = None  # full execution resource name
    task_index: int | None = None  # set for packed items: the task that ran this item
    tasks: list[TaskResult] = dataclasses.field(default_factory=list)
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    console_url: str | None = None
    log_url: str | None = None
    log_tail: list[str] | None = None
    log_tail_truncated: bool = False
    # When the tail holds lines of more than one task or attempt: its runs, in order (grouped by task index,
    # then attempt). None when every line came from one attempt of one task.
    log_tail_groups: list[TailGroup] | None = None
    log_tail_errors: list[int] | None = None  # positions in log_tail of lines of severity ERROR or worse
    # What its tasks were billed for (controller.pricing): None when no task has a start and an end.
    vcpu_seconds: float | None = None
    gib_seconds: float | None = None
    cost_usd: float | None = None  # an estimate at list prices, without free tier or discounts
    # What the item's task wrote to $FANOUT_RESULT_FILE (controller.results): the JSON value, a list by task
    # index for an item of several tasks; None when nothing was written or the value is not inline.
    result: Any = None
    result_uri: str | None = None  # where the value lies when it is over 64 KiB (not inline)
    # Under a retry policy (controller.policy), once an attempt failed: every attempt, the last one this
    # result's, each with why it was or was not retried. None for an item that ran once without failing.
    history: list[Attempt] | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.start_time and self.end_time:
            return (self.end_time - self.start_time).total_seconds()
        return None


class LaunchResult(_Frozen):
    """One Cloud Run execution started by the batch (per item, or packed with many items)."""

    index: int
    key: str  # idempotency key: batch id + launch index, carried into the execution's env
    job: str
    packed: bool
    items: int
    execution: str | None = None
    state: LaunchStatus | None = None
    error: str | None = None  # why it never started, or why its end is not known
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    console_url: str | None = None
    attempt: int = 1  # the controller-side attempt of its items: above 1 for a retry launch

    @model_validator(mode="before")
    @classmethod
    def _error_text_in_state(cls, data: Any) -> Any:
        """Reports written before ``error`` existed held the reason a launch never started in ``state``."""
        if isinstance(data, dict) and isinstance(data.get("state"), str) and "error" not in data:
            state = data["state"].replace(" ", "_")
            if state not in LaunchStatus.__members__.values():
                return {**data, "state": LaunchStatus.NOT_LAUNCHED, "error": data["state"]}
            return {**data, "state": state}
        return data


class Cost(_Frozen):
    """The batch's billed resources, summed over its items, and their estimated price (controller.pricing)."""

    vcpu_seconds: float = 0.0
    gib_seconds: float = 0.0
    cost_usd: float = 0.0


class Summary(_Frozen):
    total: int
    by_state: dict[ItemState, int]
    launches: int
    duration_seconds: float | None
    cost: Cost | None = None  # None in reports written before costs were counted

    @property
    def succeeded(self) -> int:
        return self.by_state.get(ItemState.SUCCEEDED, 0)

    @property
    def not_succeeded(self) -> int:
        return self.total - self.succeeded


class BatchLink(_Frozen):
    """Another batch, by id and where its report is (``report.json``, a path or a gs:// URL)."""

    batch_id: str
    report: str


class Rerun(BatchLink):
    """A batch that reruns some of this batch's items (``fanout rerun``)."""

    states: list[ItemState]  # the states of the items it reruns
    items: int
    started_at: datetime


class Report(_Frozen):
    """The whole batch. Written as ``<report-to>/<batch-id>/report.json``."""

    schema_: str = Field(default=SCHEMA, alias="schema")
    batch_id: str
    status: BatchStatus
    flow_run_id: str | None = None
    spec_digest: str
    project: str
    region: str
    mode: str
    started_at: datetime
    finished_at: datetime
    summary: Summary
    launches: list[LaunchResult]
    problems: list[str] = []  # batch-level errors (e.g. a cancelled flow, a failed API), in words
    stopped: str | None = None  # why the batch stopped early (max_failures), when it did
    rerun_of: BatchLink | None = None  # the batch whose items this one reruns
    reruns: list[Rerun] = []  # batches that rerun this one's items, added as they start
    items: list[ItemResult]  # last, so that writers can stream them

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def json_chunks(self, items_per_chunk: int = 1000) -> Iterator[bytes]:
        """The canonical JSON in pieces, so that a 10,000-item report is never one string in memory: stable
        key order, UTC timestamps, ``schema`` first and ``items`` last, one item per line."""
        head = self.model_dump_json(by_alias=True, indent=1, exclude={"items"}).removesuffix("\n}")
        yield head.encode() + b',\n "items": ['
        for start in range(0, len(self.items), items_per_chunk):
            chunk = self.items[start : start + items_per_chunk]
            yield b"".join((b",\n" if start or n else b"\n") + item_json(item) for n, item in enumerate(chunk))
        yield b"\n]\n}" if self.items else b"]\n}"

    @classmethod
    def from_json(cls, text: str | bytes) -> Report:
        return cls.model_validate_json(text)

    def ran_to_end(self, spec_digest: str, launches: int) -> bool:
        """Whether this is the final report of a run of that spec in that many launches: every launch started
        and its execution ended, so running the batch again has nothing left to do."""
        return (
            self.spec_digest == spec_digest
            and sum(1 for launch in self.launches if launch.attempt == 1) == launches
            and all(launch.execution is not None and launch.state in ENDED for launch in self.launches)
        )

    def failed_items(self) -> list[ItemResult]:
        return [item for item in self.items if not item.state.ok]


_ITEM_JSON: TypeAdapter[ItemResult] = TypeAdapter(ItemResult)
_ANY_JSON: TypeAdapter[Any] = TypeAdapter(Any)
_IDENTITY = frozenset({"key", "index", "job", "state"})  # from the validated spec and the outcome: never dropped


def item_json(item: ItemResult) -> bytes:
    """One item as report.json holds it; an item with a value no JSON document can hold is written as
    ``writable`` makes it, so one bad value never costs the report."""
    try:
        return _ITEM_JSON.dump_json(item)
    except ValueError:  # PydanticSerializationError: checked field by field only then, so it costs nothing else
        return _ITEM_JSON.dump_json(writable(item))


def writable(item: ItemResult) -> ItemResult:
    """``item`` without the fields no JSON document can hold (a lone surrogate in a log line or a reason, a
    value nested past the serializer's limit), each set back to its default, and its reason saying which."""
    lost: list[str] = []
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(item):
        value = getattr(item, field.name)
        if field.name in _IDENTITY or value is None:
            continue
        try:
            _ANY_JSON.dump_json(value)
        except ValueError as exc:
            lost.append(f"{field.name} ({str(exc).removeprefix('Error serializing to JSON: ')})")
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            changes[field.name] = default
    if not lost:
        return item
    note = "not in the report, no JSON document can hold it: " + ", ".join(lost)
    reason = changes.get("reason", item.reason)
    return dataclasses.replace(item, **{**changes, "reason": f"{reason}; {note}" if reason else note})


def summarize(items: Iterable[ItemResult], *, launches: int, duration_seconds: float | None) -> Summary:
    """Counts by state (every state present, zeros included, in declaration order)."""
    items = list(items)
    counts = Counter(item.state for item in items)
    return Summary(
        total=len(items),
        by_state={state: counts.get(state, 0) for state in ItemState},
        launches=launches,
        duration_seconds=duration_seconds,
        cost=Cost(
            vcpu_seconds=round(sum(item.vcpu_seconds or 0.0 for item in items), 3),
            gib_seconds=round(sum(item.gib_seconds or 0.0 for item in items), 3),
            cost_usd=round(sum(item.cost_usd or 0.0 for item in items), 9),
        ),
    )


def batch_status(summary: Summary, *, cancelled: bool) -> BatchStatus:
    if cancelled:
        return BatchStatus.CANCELLED
    return BatchStatus.SUCCEEDED if summary.not_succeeded == 0 else BatchStatus.FAILED
