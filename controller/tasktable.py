"""The tasks of one execution as the controller holds them until the report is written: columns by task index.

A batch of a million packed items holds a million task statuses from the moment their executions are read
to the end of the report. As ``TaskStatus`` objects with their two ``datetime``s that was about 220 bytes a
task; as columns it is 29 (a state code, an exit code, attempts, start and end in microseconds), and a
``TaskStatus`` is built again only for the item being reported. Messages are kept only for tasks that did not
succeed, so they stay few.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from controller.cloudrun import TaskStatus
from controller.report import ItemState

_STATES = tuple(ItemState)
_CODE = {state: code for code, state in enumerate(_STATES)}
_UNFINISHED = len(_STATES)  # pending or running: TaskStatus.state None
_ABSENT = -1  # no task with this index was listed
_NO_EXIT = -(2**31)  # exit codes are int32 on the wire; the smallest never comes from a container
_NO_TIME = 0  # a time Cloud Run did not set (TaskStatus reads epoch 0 as unset too)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime | None) -> int:
    return _NO_TIME if moment is None else (moment - _EPOCH) // _MICROSECOND


def _moment(micros: int) -> datetime | None:
    return None if micros == _NO_TIME else _EPOCH + timedelta(microseconds=micros)


class TaskTable:
    """Task statuses by task index, read back as ``TaskStatus``. A second status of the same index (Cloud Run
    lists one task per index, but nothing here relies on it) is kept aside as it came."""

    __slots__ = ("_attempts", "_end", "_exit", "_extra", "_messages", "_start", "_state", "count")

    def __init__(self, tasks: Iterable[TaskStatus] = ()) -> None:
        self._state = array("b")
        self._exit = array("i")
        self._attempts = array("i")
        self._start = array("q")
        self._end = array("q")
        self._messages: dict[int, str] = {}
        self._extra: dict[int, list[TaskStatus]] = {}
        self.count = 0
        for task in tasks:
            self.add(task)

    def add(self, task: TaskStatus) -> None:
        index = task.index
        if index >= len(self._state):
            grow = index + 1 - len(self._state)
            self._state.extend([_ABSENT] * grow)
            self._exit.extend([_NO_EXIT] * grow)
            self._attempts.extend([0] * grow)
            self._start.extend([_NO_TIME] * grow)
            self._end.extend([_NO_TIME] * grow)
        self.count += 1
        if self._state[index] != _ABSENT:
            self._extra.setdefault(index, []).append(task)
            return
        self._state[index] = _UNFINISHED if task.state is None else _CODE[task.state]
        self._exit[index] = _NO_EXIT if task.exit_code is None else task.exit_code
        self._attempts[index] = task.attempts
        self._start[index] = _micros(task.start_time)
        self._end[index] = _micros(task.completion_time)
        if task.message is not None:
            self._messages[index] = task.message

    def at(self, index: int) -> list[TaskStatus]:
        """The statuses listed for task ``index`` (none when it was not listed)."""
        if index >= len(self._state) or self._state[index] == _ABSENT:
            return []
        code, exit_code = self._state[index], self._exit[index]
        first = TaskStatus(
            index=index,
            state=None if code == _UNFINISHED else _STATES[code],
            exit_code=None if exit_code == _NO_EXIT else exit_code,
            attempts=self._attempts[index],
            start_time=_moment(self._start[index]),
            completion_time=_moment(self._end[index]),
            message=self._messages.get(index),
        )
        return [first, *self._extra.get(index, ())]

    def __iter__(self) -> Iterator[TaskStatus]:
        """Every status, by task index."""
        for index in range(len(self._state)):
            yield from self.at(index)

    def __len__(self) -> int:
        return self.count
