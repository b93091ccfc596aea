"""How often the watcher polls: fast when an execution starts or ends, slower while nothing changes, and
paced to the end of a long packed execution as its tasks finish (see ``PollPolicy``)."""

from __future__ import annotations

from dataclasses import dataclass

from controller.cloudrun import ExecutionStatus


@dataclass(frozen=True)
class PollPolicy:
    """Adaptive polling: ``fastest`` when an execution has just started or ended, slowing by ``backoff``
    up to ``slowest`` otherwise; while tasks finish at a measurable pace, at most ``remaining time /
    polls_per_remaining`` (never under ``fastest``), so the end of a long packed execution is seen soon
    after it happens and the execution costs a few dozen polls rather than one per ``fastest`` seconds."""

    fastest: float = 2.0
    slowest: float = 30.0
    # The first polls of a batch come sooner, growing by ``backoff`` to ``fastest``: a task of a fraction of
    # a second is seen done within a fraction of a second, for a handful of extra calls per batch.
    first: float = 0.25
    backoff: float = 1.5
    polls_per_remaining: float = 4.0


class Pace:
    """How long to wait before the next poll (see PollPolicy)."""

    def __init__(self, policy: PollPolicy) -> None:
        self.policy = policy
        # The first polls come after ``policy.first``, growing by ``backoff`` to ``fastest``.
        self.warm = self.interval = min(policy.first, policy.fastest)
        self._changed = False
        self._ends_in: float | None = None
        self._last: dict[str, tuple[bool, bool]] = {}
        self._first_seen: dict[str, tuple[float, int]] = {}  # execution -> (clock, finished tasks) at first poll

    def observe(self, status: ExecutionStatus, now: float) -> None:
        # Only a start or an end resets to the fastest pace: the task counts of a packed execution change at
        # every poll, and resetting on them polled a 10,000-task execution every `fastest` seconds.
        signature = (status.start_time is not None, status.done)
        self._changed |= self._last.get(status.name) != signature
        self._last[status.name] = signature
        remaining = _remaining_seconds(
            status, self._first_seen.setdefault(status.name, (now, status.finished_tasks)), now
        )
        if remaining is not None:
            self._ends_in = remaining if self._ends_in is None else min(self._ends_in, remaining)

    def next(self, *, waiting_for_launches: bool) -> float:
        policy = self.policy
        if waiting_for_launches:
            self.interval = self.warm  # only waiting for launches to register
        else:
            self.interval = self.warm if self._changed else min(self.interval * policy.backoff, policy.slowest)
            if self._ends_in is not None:
                self.interval = min(self.interval, max(policy.fastest, self._ends_in / policy.polls_per_remaining))
        self.warm = min(self.warm * policy.backoff, policy.fastest)
        self._changed, self._ends_in = False, None
        return self.interval


def _remaining_seconds(status: ExecutionStatus, first: tuple[float, int], now: float) -> float | None:
    """Seconds until the execution's last task ends at the pace its tasks have finished since it was
    first polled; None while that pace is unknown (no task finished yet, or a single-task execution)."""
    since, finished_then = first
    finished = status.finished_tasks - finished_then
    if status.done or finished <= 0 or now <= since:
        return None
    return (status.task_count - status.finished_tasks) * (now - since) / finished
