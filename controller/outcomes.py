"""How the state of a batch's launches reads as results: one ItemResult per item, one LaunchResult per launch,
each in a terminal state, with the reason in words where it did not succeed.

Pure: it takes the launch states the runner (``batch.py``) gathered and what the runner knows of the batch
(cancelled, Cloud Run lost, cancellations not confirmed), and returns data.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypedDict

from controller.cloudrun import ExecutionStatus, TaskStatus
from controller.launch_state import LaunchState
from controller.plan import Launch
from controller.pricing import tasks_usage
from controller.redact import as_text
from controller.report import ItemResult, ItemState, LaunchResult, LaunchStatus, TaskResult
from controller.spec import Item
from controller.tasktable import TaskTable

INTERIM_PROBLEM = (
    "interim report: written as the batch was interrupted, before its cancellation; the controller was stopped "
    "before it could write the report that replaces this one, so executions it lists unfinished may still run"
)


@dataclass(frozen=True)
class Outcomes:
    """What the runner knows of the batch as a whole, which decides how an unfinished launch reads."""

    cancelled: bool
    cloud_lost: str | None
    cancel_failed: frozenset[str]  # executions whose cancellation Cloud Run never accepted
    redact: Callable[[str], str]
    console_url: Callable[[str], str | None]  # None where no Cloud Console can show it (an emulator)
    # Read as the batch is interrupted, before its cancellation and without reading tasks: what had not
    # ended, or whose tasks were not read, is "outcome unknown".
    interim: bool = False
    stopped: str | None = None  # why the batch stopped early (max_failures), when it did

    def item_results(self, states: Sequence[LaunchState]) -> Iterator[ItemResult]:
        """One result per item of the batch, every one in a terminal state, in spec order, each made as it is
        asked for: a million-item batch is read into its report without ever holding a million results."""
        where = _placements(states)
        current: LaunchState | None = None
        console: str | None = None
        for index, placed in enumerate(where.launch):
            if placed < 0:
                continue
            state = states[placed]
            if state is not current:  # a packed launch's items are mostly neighbours in the spec
                current = state
                console = self.console_url(state.execution.name) if state.execution else None
            position = where.position[index]
            item = state.launch.items[position]
            tasks = state.tasks or TaskTable()
            try:
                found = tasks.at(position) if state.launch.packed else list(tasks)
                yield self._item_result(state, item, position, found, console)
            except Exception as exc:  # one value nobody foresaw costs this item's details, not the report
                yield self._unreadable(state, item, exc)

    def _item_result(
        self, state: LaunchState, item: Item, position: int, tasks: list[TaskStatus], console: str | None
    ) -> ItemResult:
        launch = state.launch
        base = _Identity(key=item.key, index=item.index, job=launch.job, label=item.label, launch=launch.index)
        execution = state.execution
        if execution is None:
            if state.unverified is not None:
                return ItemResult(**base, state=ItemState.FAILED, reason=f"outcome unknown: {state.unverified}")
            why = state.error or self._never_launched("item")
            return ItemResult(**base, state=ItemState.NOT_LAUNCHED, reason=why)
        unfinished, unfinished_reason = self._unfinished(execution)
        task_results = [
            TaskResult(
                index=t.index,
                state=t.state or unfinished,
                exit_code=t.exit_code,
                attempts=t.attempts,
                start_time=t.start_time,
                end_time=t.completion_time,
            )
            for t in tasks
        ]
        reason: str | None
        if not task_results:
            item_state = unfinished if not execution.done else ItemState.FAILED
            reason = unfinished_reason or execution.message or "Cloud Run reported no tasks for this execution"
        else:
            bad = [t for t in task_results if t.state is not ItemState.SUCCEEDED]
            worst = min(bad, key=lambda t: t.state.rank) if bad else None
            item_state = worst.state if worst else ItemState.SUCCEEDED
            reason = self._reason(worst, tasks, launch, unfinished_reason) if worst else None
        exit_codes = [t.exit_code for t in task_results if t.exit_code is not None]
        starts = [t.start_time for t in task_results if t.start_time]
        ends = [t.end_time for t in task_results if t.end_time]
        try:
            use = tasks_usage(task_results, cpu=launch.cpu, memory=launch.memory)
        except ValueError as exc:  # a limit that is no quantity: the item's cost is unknown, its outcome is not
            use = None
            reason = "; ".join([*([reason] if reason else []), f"cost not counted: {exc}"])
        return ItemResult(
            **base,
            state=item_state,
            reason=self.redact(reason) if reason else None,
            exit_code=next((c for c in exit_codes if c != 0), exit_codes[0] if exit_codes else None),
            attempts=max((t.attempts for t in task_results), default=0),
            execution=execution.name,
            task_index=position if launch.packed else None,
            tasks=task_results,
            create_time=execution.create_time,
            start_time=min(starts) if starts else execution.start_time,
            end_time=max(ends) if ends else execution.completion_time,
            console_url=console,
            log_url=execution.log_uri if console else None,  # the console's Logs Explorer, like console_url
            vcpu_seconds=round(use.vcpu_seconds, 3) if use else None,
            gib_seconds=round(use.gib_seconds, 3) if use else None,
            cost_usd=round(use.cost_usd, 9) if use else None,
        )

    def _unreadable(self, state: LaunchState, item: Item, exc: Exception) -> ItemResult:
        launch = state.launch
        return ItemResult(
            key=item.key,
            index=item.index,
            job=launch.job,
            label=item.label,
            launch=launch.index,
            execution=state.execution.name if state.execution else None,
            state=ItemState.FAILED,
            reason=self.redact(f"outcome unknown: its result could not be read: {type(exc).__name__}: {exc}"),
        )

    def _never_launched(self, what: str) -> str:
        if self.stopped:
            return f"not launched: the batch {self.stopped}"
        if self.cancelled:
            return f"the batch was cancelled before this {what} {'launched' if what == 'item' else 'started'}"
        return "never launched"

    def _unfinished(self, execution: ExecutionStatus) -> tuple[ItemState, str | None]:
        """The state of a task not seen ending, and why, when that needs saying. Cancelled only when Cloud Run
        accepted the cancellation; an execution whose end was never seen is not known to have failed or not."""
        seen = "running" if execution.start_time else "pending"
        if self.interim and execution.done:
            return ItemState.FAILED, "outcome unknown: the batch was interrupted before its tasks were read"
        if self.interim:
            return ItemState.FAILED, f"outcome unknown: the batch was interrupted; it was last seen {seen}"
        if execution.done:
            return (ItemState.CANCELLED if self.cancelled else ItemState.FAILED), None
        if execution.name in self.cancel_failed:
            return ItemState.FAILED, f"outcome unknown: its cancellation was not confirmed; it was last seen {seen}"
        if self.cloud_lost:
            return ItemState.FAILED, f"outcome unknown: Cloud Run stopped answering; it was last seen {seen}"
        if self.cancelled:
            return ItemState.CANCELLED, f"cancelled; it was still {seen} when the controller stopped waiting"
        return ItemState.FAILED, f"it was still {seen} when the controller stopped watching"

    def _reason(self, worst: TaskResult, tasks: list[TaskStatus], launch: Launch, unfinished: str | None) -> str:
        message = next((t.message for t in tasks if t.index == worst.index and t.message), None)
        # A packed item is one task of a shared execution: its index there is internal, not the item's.
        task = "it" if launch.packed else f"task {worst.index}"
        unseen = next((t for t in tasks if t.index == worst.index and t.state is None), None)
        if unseen is not None and unfinished:
            return f"{task}: {unfinished}"
        if worst.state is ItemState.TIMED_OUT:
            limit = f" of {launch.timeout_seconds:.0f}s" if launch.timeout_seconds else ""
            return f"{task} ran past its timeout{limit}" + (f": {message}" if message else "")
        if worst.state is ItemState.CANCELLED:
            when = f" when the batch {self.stopped}" if self.stopped else ""
            return "cancelled" + when + (f": {message}" if message else "")
        if worst.exit_code is not None:
            attempts = f"{worst.attempts} attempt{'' if worst.attempts == 1 else 's'}"
            return f"{task} exited with code {worst.exit_code} after {attempts}"
        return message or f"{task} did not finish"

    def launch_results(self, states: Iterable[LaunchState]) -> list[LaunchResult]:
        out = []
        for state in states:
            execution = state.execution
            status, error = self._launch_status(state)
            out.append(
                LaunchResult(
                    index=state.launch.index,
                    key=state.launch.key,
                    job=state.launch.job,
                    packed=state.launch.packed,
                    items=len(state.launch.items),
                    execution=execution.name if execution else None,
                    state=status,
                    error=as_text(error) if error else None,  # Cloud Run's words: no lone surrogate in the report
                    create_time=execution.create_time if execution else None,
                    start_time=execution.start_time if execution else None,
                    end_time=execution.completion_time if execution else None,
                    console_url=self.console_url(execution.name) if execution else None,
                    attempt=state.launch.attempt,
                )
            )
        return out

    def _launch_status(self, state: LaunchState) -> tuple[LaunchStatus, str | None]:
        execution = state.execution
        if execution is None:
            if state.unverified is not None:
                return LaunchStatus.UNKNOWN, state.unverified
            return LaunchStatus.NOT_LAUNCHED, state.error or self._never_launched("launch")
        if execution.outcome is not None:
            return LaunchStatus(execution.outcome.value), None
        return LaunchStatus.UNFINISHED, self._unfinished(execution)[1]


class _Placements(NamedTuple):
    """Where each item of the batch is, by its index in the spec: the number of its launch state (-1 for an
    index no launch carries) and its position in that launch. An item retried in later launches is where its
    latest launch (the last of the states) carries it: its last attempt is its result."""

    launch: array[int]
    position: array[int]


def _placements(states: Sequence[LaunchState]) -> _Placements:
    size = 1 + max((item.index for state in states for item in state.launch.items), default=-1)
    launch, position = array("i", [-1]) * size, array("i", [0]) * size
    for number, state in enumerate(states):
        for at, item in enumerate(state.launch.items):
            launch[item.index], position[item.index] = number, at
    return _Placements(launch, position)


class _Identity(TypedDict):
    """The fields every ItemResult of an item has, whatever became of it."""

    key: str
    index: int
    job: str
    label: str | None
    launch: int

