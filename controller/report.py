"""The run report: one canonical, versioned record per batch, with every item in a terminal state.

Building the report is pure (data in, data out); renderers (HTML, Markdown, terminal) read this model and
storage writes its JSON (``controller.report_store``). Schema changes that remove or rename a field bump
``SCHEMA``. Since ``fanout.report/v2`` report.json holds everything but the items, which lie beside it in
shards of JSON lines (``item_shards``), so the summary is read without them and the items one shard at a
time; a v1 report.json holds its items inline and still reads.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.dataclasses import dataclass

# The schema's state type, re-exported: its table (rank, label, colours) is controller.states.
from controller.states import ItemState as ItemState  # noqa: PLC0414

SCHEMA = "fanout.report/v2"
SCHEMA_V1 = "fanout.report/v1"  # items inline in report.json


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


class ItemShard(_Frozen):
    """One object of a v2 report's items: JSON lines, one ``ItemResult`` each, items ``first`` to
    ``first + count - 1`` of the spec in order."""

    name: str  # relative to the batch's folder: items/00000.jsonl
    first: int
    count: int


class ItemsUnreadable(ValueError):
    """A v2 report's items cannot be read: a shard its report.json names is missing or is not item lines."""


class StoredItems:
    """A v2 report's items where they lie, read one shard at a time each time they are iterated, so that a
    million-item report is never in memory at once. ``read`` returns a shard's bytes by name (None: missing)."""

    __slots__ = ("read", "shards")

    def __init__(self, shards: Sequence[ItemShard], read: Callable[[str], bytes | None]) -> None:
        self.shards = tuple(shards)
        self.read = read

    def __len__(self) -> int:
        return sum(shard.count for shard in self.shards)

    def __eq__(self, other: object) -> bool:
        """The same shards holding the same items (read side by side, a shard of each at a time)."""
        if not isinstance(other, StoredItems):
            return NotImplemented
        return self.shards == other.shards and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[ItemResult]:
        for shard in self.shards:
            yield from self._shard(shard)

    def _shard(self, shard: ItemShard) -> Iterator[ItemResult]:
        """A shard's items, each parsed as it is asked for."""
        data = self.read(shard.name)
        if data is None:
            raise ItemsUnreadable(f"{shard.name} is missing: the report's items were not all written")
        count = data.count(b"\n")
        if count != shard.count:
            raise ItemsUnreadable(f"{shard.name} holds {count:,} items, not the {shard.count:,} the report lists")
        start = 0
        for _ in range(count):
            end = data.index(b"\n", start)
            try:
                item = _ITEM_JSON.validate_json(data[start:end])
            except ValueError as exc:
                raise ItemsUnreadable(f"{shard.name} is not a shard of report items: {exc}") from None
            start = end + 1
            yield item

    @overload
    def __getitem__(self, where: int) -> ItemResult: ...

    @overload
    def __getitem__(self, where: slice) -> list[ItemResult]: ...

    def __getitem__(self, where: int | slice) -> ItemResult | list[ItemResult]:
        """One item by position (only its shard is read), or a slice of them as a list."""
        if isinstance(where, slice):
            return [self[i] for i in range(*where.indices(len(self)))]
        position = where + len(self) if where < 0 else where
        for shard in self.shards:
            if shard.first <= position < shard.first + shard.count:
                return next(itertools.islice(self._shard(shard), position - shard.first, None))
        raise IndexError(where)


class Report(_Frozen):
    """The whole batch. Written as ``<report-to>/<batch-id>/report.json`` and, since v2, its item shards."""

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
    item_shards: list[ItemShard] | None = None  # v2: where the items lie; None: the items are inline (v1)
    # In memory: a list (a report built here, or a v1 report read), or the stored shards (a v2 report read).
    # Left to right, the stored items first: tried the other way, validation would read them all into a list.
    items: StoredItems | list[ItemResult] = Field(union_mode="left_to_right")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    def header_json(self) -> bytes:
        """report.json of a v2 report: every field but the items, canonical (stable key order, UTC times)."""
        return self.model_dump_json(by_alias=True, indent=1, exclude={"items"}).encode() + b"\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, read: Callable[[str], bytes | None] | None = None) -> Report:
        """A report.json: v1 with its items inline, or v2 whose shards ``read`` returns by name (relative to
        the batch's folder) when the items are iterated."""
        data = text.encode() if isinstance(text, str) else text
        if _V1_HEAD.match(data, 0, 200):  # parsed straight from the bytes: a v1 document holds every item
            return cls.model_validate_json(data)
        try:
            document = json.loads(data)
        except ValueError:
            return cls.model_validate_json(data)  # raises pydantic's error, which says where
        if not isinstance(document, dict) or document.get("item_shards") is None:
            return cls.model_validate(document)  # the errors of a document that is no report, or a v1 one
        header = cls.model_validate({**document, "items": []})
        if read is None:
            raise TypeError("a v2 report's items lie in shards beside it: give read= to reach them")
        return header.model_copy(update={"items": StoredItems(header.item_shards or [], read)})

    def ran_to_end(self, spec_digest: str, launches: int) -> bool:
        """Whether this is the final report of a run of that spec in that many launches: every launch started
        and its execution ended, so running the batch again has nothing left to do."""
        return (
            self.spec_digest == spec_digest
            and sum(1 for launch in self.launches if launch.attempt == 1) == launches
            and all(launch.execution is not None and launch.state in ENDED for launch in self.launches)
        )

    def failed_items(self) -> Iterator[ItemResult]:
        """The items that did not succeed, in spec order, as they are read."""
        return (item for item in self.items if not item.state.ok)


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
_V1_HEAD = re.compile(rb'\s*\{\s*"schema"\s*:\s*"fanout\.report/v1"')


class Tally:
    """A summary made from items seen one at a time (as they are written), never holding them."""

    __slots__ = ("counts", "gib_seconds", "total", "usd", "vcpu_seconds")

    def __init__(self) -> None:
        self.counts: Counter[ItemState] = Counter()
        self.total = 0
        self.vcpu_seconds = self.gib_seconds = self.usd = 0.0

    def add(self, item: ItemResult) -> None:
        self.total += 1
        self.counts[item.state] += 1
        self.vcpu_seconds += item.vcpu_seconds or 0.0
        self.gib_seconds += item.gib_seconds or 0.0
        self.usd += item.cost_usd or 0.0

    def summary(self, *, launches: int, duration_seconds: float | None) -> Summary:
        """Counts by state (every state present, zeros included, in declaration order) and costs."""
        return Summary(
            total=self.total,
            by_state={state: self.counts.get(state, 0) for state in ItemState},
            launches=launches,
            duration_seconds=duration_seconds,
            cost=Cost(
                vcpu_seconds=round(self.vcpu_seconds, 3),
                gib_seconds=round(self.gib_seconds, 3),
                cost_usd=round(self.usd, 9),
            ),
        )


def summarize(items: Iterable[ItemResult], *, launches: int, duration_seconds: float | None) -> Summary:
    """The summary of ``items``, read once."""
    tally = Tally()
    for item in items:
        tally.add(item)
    return tally.summary(launches=launches, duration_seconds=duration_seconds)


def batch_status(summary: Summary, *, cancelled: bool) -> BatchStatus:
    if cancelled:
        return BatchStatus.CANCELLED
    return BatchStatus.SUCCEEDED if summary.not_succeeded == 0 else BatchStatus.FAILED
