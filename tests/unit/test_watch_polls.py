"""How often the batch watcher polls: few calls for a long packed execution, its end seen promptly.

A scripted Cloud Run fake answers from a fake clock that the watcher's own wait advances, so the
intervals are exact and the test is instant.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller.batch import BatchRunner, PollPolicy
from controller.catalog import Catalog
from controller.cloudrun import ExecutionOutcome, ExecutionStatus
from controller.plan import Mode, plan
from controller.spec import load_batch

STARTED = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class AdvancingEvent(threading.Event):
    """``wait`` advances the fake clock instead of sleeping, and records each interval."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.clock.now += timeout
        return False


class SteadyExecution:
    """One execution of ``tasks`` tasks that finish at ``per_second`` from ``start`` on."""

    def __init__(self, clock: Clock, tasks: int, per_second: float, start: float = 1.0) -> None:
        self.clock, self.tasks, self.per_second, self.start = clock, tasks, per_second, start
        self.polls: list[float] = []

    @property
    def ends_at(self) -> float:
        return self.start + self.tasks / self.per_second

    def status(self, name: str) -> ExecutionStatus:
        now = self.clock.now
        finished = min(self.tasks, max(0, int((now - self.start) * self.per_second)))
        done = finished == self.tasks
        return ExecutionStatus(
            name=name,
            job="hello",
            key=None,
            task_count=self.tasks,
            running=0 if done else min(100, self.tasks - finished),
            succeeded=finished,
            failed=0,
            cancelled=0,
            retried=0,
            create_time=STARTED,
            start_time=STARTED,
            completion_time=STARTED if done else None,
            outcome=ExecutionOutcome.SUCCEEDED if done else None,
            message=None,
            log_uri=None,
        )

    def poll(self, names_by_job: dict[str, set[str]], *, since: datetime) -> dict[str, ExecutionStatus]:
        self.polls.append(self.clock.now)
        return {name: self.status(name) for names in names_by_job.values() for name in names}


def _watch(
    tasks: int, per_second: float, policy: PollPolicy, start: float = 1.0
) -> tuple[SteadyExecution, AdvancingEvent]:
    catalog = Catalog.from_jobs_dir()
    batch = load_batch({"batch_id": "w1", "items": [{"job": "hello", "args": [str(i)]} for i in range(tasks)]}, catalog)
    clock = Clock()
    cloud = SteadyExecution(clock, tasks, per_second, start=start)
    event = AdvancingEvent(clock)
    runner = BatchRunner(
        plan(batch, catalog, mode=Mode.PACKED, manifest_root="/m"),
        cloud,
        store=None,  # type: ignore[arg-type]
        poll=policy,
        clock=clock,
        cancel_event=event,
    )
    (state,) = runner.states
    state.execution = replace(cloud.status("projects/p/locations/r/jobs/hello/executions/hello-abcde"))
    runner.watch()
    return cloud, event


@pytest.mark.parametrize("fastest", [0.5, 2.0])
def test_a_long_packed_execution_costs_a_few_dozen_polls(fastest: float) -> None:
    cloud, _ = _watch(10_000, per_second=25.0, policy=PollPolicy(fastest=fastest))  # 400 s
    assert len(cloud.polls) <= 60  # one per `fastest` seconds would be 200 to 800
    assert cloud.polls[-1] - cloud.ends_at <= 2 * fastest  # the end is still seen promptly


def test_a_short_execution_is_watched_at_the_fastest_pace_near_its_end() -> None:
    cloud, event = _watch(1000, per_second=100.0, policy=PollPolicy(fastest=0.5))  # 10 s
    assert cloud.polls[-1] - cloud.ends_at <= 1.0
    assert max(event.waits) <= 10.0 / 4 + 0.5


# The first polls of a batch come fast, so a task of a fraction of a second is seen done soon after it ends
# (it used to wait for ``fastest``, 2 s by default), and the warm-up costs only a handful of polls.


def test_a_task_of_a_fraction_of_a_second_is_seen_done_within_half_a_second() -> None:
    cloud, event = _watch(1, per_second=5.0, policy=PollPolicy(), start=0.1)  # done 0.3 s after the launch
    assert cloud.polls[-1] - cloud.ends_at <= 0.5, cloud.polls
    assert event.waits[:3] == [0.25, 0.375, 0.5625]  # growing by `backoff` ...


def test_the_warm_up_ends_at_the_fastest_pace() -> None:
    _, event = _watch(1000, per_second=10.0, policy=PollPolicy(fastest=2.0))  # 100 s
    assert max(event.waits[:6]) <= 2.0
    assert len([w for w in event.waits if w < 2.0]) <= 6  # ... to `fastest` in a handful of polls
