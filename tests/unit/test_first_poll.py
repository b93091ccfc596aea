"""The first polls of a batch come fast, so a task of a fraction of a second is seen done soon after it ends
(it used to wait for ``fastest``, 2 s by default), and the warm-up costs only a handful of polls."""

from __future__ import annotations

from dataclasses import replace

from controller.batch import BatchRunner, PollPolicy
from controller.catalog import Catalog
from controller.plan import Mode, plan
from controller.spec import load_batch
from tests.unit.test_watch_polls import AdvancingEvent, Clock, SteadyExecution


def _watch(tasks: int, per_second: float, start: float, policy: PollPolicy) -> tuple[SteadyExecution, AdvancingEvent]:
    catalog = Catalog.from_jobs_dir()
    batch = load_batch({"batch_id": "f1", "items": [{"job": "hello", "args": [str(i)]} for i in range(tasks)]}, catalog)
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


def test_a_task_of_a_fraction_of_a_second_is_seen_done_within_half_a_second() -> None:
    cloud, event = _watch(1, per_second=5.0, start=0.1, policy=PollPolicy())  # done 0.3 s after the launch
    assert cloud.polls[-1] - cloud.ends_at <= 0.5, cloud.polls
    assert event.waits[:3] == [0.25, 0.375, 0.5625]  # growing by `backoff` ...


def test_the_warm_up_ends_at_the_fastest_pace() -> None:
    _, event = _watch(1000, per_second=10.0, start=1.0, policy=PollPolicy(fastest=2.0))  # 100 s
    assert max(event.waits[:6]) <= 2.0
    assert len([w for w in event.waits if w < 2.0]) <= 6  # ... to `fastest` in a handful of polls
