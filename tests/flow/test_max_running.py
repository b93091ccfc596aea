"""``--max-running-tasks``: the plan's split, the refusals, and the cap held against the emulator.

The integration tests run real Prefect flow runs on an emulator of their own (its peak counter and its
executions belong to these tests alone) and watch it through the official client while the batch runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from testenv import PROJECT, REGION

from cloudrun_emulator import Emulator
from controller.batchfolder import open_report
from controller.catalog import Catalog
from controller.cli import main
from controller.emulator_jobs import catalog_emulator
from controller.plan import Mode, PlanError, plan
from controller.report import ItemState, Report
from controller.spec import load_batch

Run = Callable[..., tuple[dict[str, Any], Report]]


def _catalog_with(catalog: Catalog, **hello: Any) -> Catalog:
    jobs = {**catalog.jobs, "hello": catalog.jobs["hello"].model_copy(update=hello)}
    return Catalog(jobs, project=catalog.project, region=catalog.region)


def _items(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"key": f"i{n}", "job": "hello", "args": [f"n{n}"], **fields} for n in range(count)]


# -- the plan ----------------------------------------------------------------------------------------------


def test_packed_launches_are_split_to_fit_the_cap(catalog: Catalog) -> None:
    batch = load_batch({"batch_id": "cap-split", "items": _items(25)}, catalog)

    capped = plan(batch, catalog, mode=Mode.PACKED, max_running_tasks=10)

    assert [launch.task_count for launch in capped.launches] == [10, 10, 5]
    assert [item.key for launch in capped.launches for item in launch.items] == [f"i{n}" for n in range(25)]
    assert capped.waves == 3
    uncapped = plan(batch, catalog, mode=Mode.PACKED)
    assert [launch.task_count for launch in uncapped.launches] == [25]
    assert uncapped.waves == 1


def test_a_job_whose_parallelism_fits_the_cap_is_not_split(catalog: Catalog) -> None:
    narrow = _catalog_with(catalog, parallelism=4)
    batch = load_batch({"batch_id": "cap-narrow", "items": _items(25)}, narrow)

    capped = plan(batch, narrow, mode=Mode.PACKED, max_running_tasks=10)

    assert [(launch.task_count, launch.concurrent_tasks) for launch in capped.launches] == [(25, 4)]


def test_an_item_whose_job_runs_more_tasks_at_once_than_the_cap_is_refused(catalog: Catalog) -> None:
    spec = {"batch_id": "cap-wide", "items": [*_items(2), {"key": "wide", "job": "hello", "task_count": 5}]}

    with pytest.raises(PlanError) as refused:
        plan(load_batch(spec, catalog), catalog, max_running_tasks=3)

    assert refused.value.problems == [
        "items[2] (wide): job 'hello' would run 5 of its 5 tasks at once (parallelism unlimited), over "
        "--max-running-tasks 3; RunJob cannot lower a job's parallelism: set the job's parallelism to at most "
        "the cap, or give fewer tasks"
    ]
    # Honoured, so planned, when the job's own parallelism keeps the item within the cap.
    narrow = _catalog_with(catalog, parallelism=3)
    launch = plan(load_batch(spec, narrow), narrow, max_running_tasks=3).launches[-1]
    assert (launch.task_count, launch.concurrent_tasks) == (5, 3)


def test_a_one_off_item_gets_a_job_with_the_cap_as_its_parallelism(catalog: Catalog) -> None:
    item = {"key": "big", "image": "python:3.12-slim", "command": ["python", "-c", "pass"], "task_count": 8}
    small = {"key": "small", "image": "python:3.12-slim", "command": ["python", "-c", "pass"]}
    batch = load_batch({"batch_id": "cap-oneoff", "items": [item, small]}, catalog)

    capped = plan(batch, catalog, max_running_tasks=3)

    big, one = capped.launches
    assert (big.task_count, big.concurrent_tasks, one.concurrent_tasks) == (8, 3, 1)
    assert sorted(job.parallelism for job in capped.one_off_jobs) == [0, 3]
    # Without the cap the jobs (and their names) are what they always were.
    assert [job.parallelism for job in plan(batch, catalog).one_off_jobs] == [0]


def test_fanout_plan_shows_the_cap_and_refuses_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "batch.yaml"
    spec.write_text(json.dumps({"batch_id": "cap-cli", "items": _items(7)}))

    assert main(["plan", str(spec), "--mode", "per-item", "--max-running-tasks", "3"]) == 0
    assert "at most 3 tasks running at once: 7 launches in about 3 waves" in capsys.readouterr().out
    assert main(["plan", str(spec), "--json", "--max-running-tasks", "5"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["max_running_tasks"], body["waves"], len(body["launches"])) == (5, 2, 2)

    for bad in ("0", "-1", "inf", "nan", "2.5"):
        assert main(["plan", str(spec), "--max-running-tasks", bad]) == 2
        assert capsys.readouterr().err.startswith("fanout: --max-running-tasks: "), bad
    monkeypatch.setenv("FANOUT_MAX_RUNNING_TASKS", "0")
    assert main(["plan", str(spec)]) == 2
    assert "FANOUT_MAX_RUNNING_TASKS: between 1 and 1,000,000, got 0" in capsys.readouterr().err
    monkeypatch.delenv("FANOUT_MAX_RUNNING_TASKS")
    spec.write_text(json.dumps({"batch_id": "cap-cli", "items": [{"key": "wide", "job": "hello", "task_count": 4}]}))
    assert main(["plan", str(spec), "--max-running-tasks", "2"]) == 2
    err = capsys.readouterr().err
    assert "items[0] (wide): job 'hello' would run 4 of its 4 tasks at once" in err
    assert "Traceback" not in err


# -- against the emulator ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator(catalog: Catalog, gcs: Any) -> Iterator[Emulator]:
    """An emulator for this module only: its peak running-task counter and its executions are ours."""
    with catalog_emulator(catalog, project=PROJECT, region=REGION, max_running_tasks=64) as emu:
        yield emu


class RunningTasks:
    """The running tasks of one batch over time, read through the official client (ListExecutions' running
    counts of the executions carrying the batch's launch keys) five times a second while it runs."""

    def __init__(self, emulator: Emulator, batch_id: str) -> None:
        self.client = run_v2.ExecutionsClient(
            credentials=AnonymousCredentials(),
            transport="rest",
            client_options=ClientOptions(api_endpoint=emulator.url),
        )
        self.parent = f"projects/{PROJECT}/locations/{REGION}/jobs/hello"
        self.batch_id = batch_id
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def executions(self) -> list[run_v2.Execution]:
        return [
            execution
            for execution in self.client.list_executions(parent=self.parent)
            if any(
                env.name == "FANOUT_LAUNCH_KEY" and env.value.startswith(f"{self.batch_id}/")
                for container in execution.template.containers
                for env in container.env
            )
        ]

    def running(self) -> int:
        return sum(execution.running_count for execution in self.executions())

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(self.running())

    def __enter__(self) -> RunningTasks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _launch_index(execution: run_v2.Execution) -> int:
    keys = [e.value for c in execution.template.containers for e in c.env if e.name == "FANOUT_LAUNCH_KEY"]
    return int(keys[0].rsplit("/", 1)[1])


def _peak(emulator: Emulator) -> int:
    return emulator.task_stats()["peak_running_tasks"]


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "launches"),
    [("packed", 3), ("per-item", 9)],
)
def test_no_more_tasks_run_at_once_than_the_cap(
    run_flow: Run, emulator: Emulator, mode: str, launches: int, figures: Any
) -> None:
    emulator.reset_stats()
    spec: dict[str, Any] = {"batch_id": f"cap-{mode}", "items": _items(9, args=["x", "--sleep", "2"])}

    with RunningTasks(emulator, spec["batch_id"]) as running:
        _summary, report = run_flow(spec, mode=mode, max_running_tasks=3)

    assert [item.state for item in report.items] == [ItemState.SUCCEEDED] * 9, [i.reason for i in report.items]
    assert len(report.launches) == launches
    assert max(running.samples) <= 3
    # The emulator counts every task start: never past the cap (9 at once without it). A packed launch starts
    # its 3 tasks together, so the cap is reached; per-item launches start one by one and may overlap less.
    assert _peak(emulator) == 3 if mode == "packed" else 2 <= _peak(emulator) <= 3
    figures(f"max running tasks, cap 3, {mode}", f"{_peak(emulator)} (samples: {len(running.samples)})")


def test_a_cancelled_execution_frees_its_slots(run_flow: Run, emulator: Emulator) -> None:
    emulator.reset_stats()
    long = {"key": "long", "job": "hello", "args": ["x", "--sleep", "60"]}
    spec: dict[str, Any] = {"batch_id": "cap-cancel-one", "items": [long, *_items(2, args=["x", "--sleep", "0.2"])]}
    result: dict[str, Report] = {}

    with RunningTasks(emulator, spec["batch_id"]) as running:
        flow = threading.Thread(
            target=lambda: result.update(report=run_flow(spec, mode="per-item", max_running_tasks=1)[1])
        )
        flow.start()

        # Someone else cancels the long execution (launch 0, whichever launch took the slot first); the launches
        # waiting behind it must start then.
        def long_running() -> list[run_v2.Execution]:
            return [e for e in running.executions() if e.running_count and _launch_index(e) == 0]

        _wait_until(lambda: bool(long_running()), "the long item to run", timeout=120)
        running.client.cancel_execution(name=long_running()[0].name).result(timeout=30)
        flow.join(timeout=120)

    assert not flow.is_alive()
    states = {item.key: item.state for item in result["report"].items}
    assert states == {"long": ItemState.CANCELLED, "i0": ItemState.SUCCEEDED, "i1": ItemState.SUCCEEDED}, [
        (item.key, item.reason, item.log_tail) for item in result["report"].items
    ]
    assert max(running.samples) <= 1
    assert _peak(emulator) == 1


def test_a_cancelled_batch_starts_nothing_that_waited_and_leaves_nothing_running(
    run_flow: Run, emulator: Emulator, gcs: Any
) -> None:
    from controller.flow import BatchCancelled

    emulator.reset_stats()
    spec: dict[str, Any] = {"batch_id": "cap-deadline", "items": _items(3, args=["x", "--sleep", "60"])}

    started = time.monotonic()
    cancelled = pytest.raises(BatchCancelled, match="batch cap-deadline cancelled by its deadline of 3s")
    with RunningTasks(emulator, spec["batch_id"]) as running, cancelled as raised:
        run_flow(spec, mode="per-item", max_running_tasks=1, deadline="3s")
    report = open_report(raised.value.summary["report"], gcs).report

    assert time.monotonic() - started < 60  # the launches waiting for a slot did not hold the flow
    # Whichever launch reached its slot first ran and was cancelled at the deadline; the two that waited for
    # the slot were never launched.
    cancelled = [item for item in report.items if item.state == ItemState.CANCELLED]
    waited = [item for item in report.items if item.state == ItemState.NOT_LAUNCHED]
    assert (len(cancelled), len(waited)) == (1, 2), [item.state for item in report.items]
    assert all(item.reason == "the batch was cancelled before this launch started" for item in waited), [
        item.reason for item in report.items
    ]
    assert len(running.executions()) == 1
    _wait_until(lambda: running.running() == 0, "the batch's tasks to stop")
    assert max(running.samples) <= 1
    assert _peak(emulator) == 1


def test_the_runner_without_prefect_tasks_keeps_the_cap_too(
    emulator: Emulator, catalog: Catalog, clients: Any, tmp_path: Path
) -> None:
    """``execute(use_prefect_tasks=False)`` (benchmarks, reliability trials): launches on threads, watched meanwhile."""
    from controller.flow import Options, execute
    from controller.pace import PollPolicy
    from controller.quota import Rates
    from controller.store import LocalStore

    emulator.reset_stats()
    batch = load_batch({"batch_id": "cap-threads", "items": _items(5, args=["x", "--sleep", "1"])}, catalog)
    options = Options(
        project=PROJECT,
        region=REGION,
        report_to=str(tmp_path),
        mode=Mode.PER_ITEM,
        rates=Rates.unlimited(),
        poll=PollPolicy(fastest=0.25, slowest=1.0),
        max_running_tasks=2,
    )

    with RunningTasks(emulator, "cap-threads") as running:
        report, _ = execute(
            batch, catalog, options, clients=clients, store=LocalStore(tmp_path), use_prefect_tasks=False
        )

    assert [item.state for item in report.items] == [ItemState.SUCCEEDED] * 5
    assert max(running.samples) <= 2
    assert 1 <= _peak(emulator) <= 2
