"""One quota per project: two batches of one project at once, each with its own controller, draw their
RunJob calls from one Prefect global rate limit, so together they stay inside one project budget.

The controllers run ``controller.flow.execute(..., use_prefect_tasks=False)`` in two threads (each builds
its own budget, as two ``fanout run`` processes would), against an emulator in its own process; when each
RunJob call reached the emulator is read back from the executions' create times.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import run_v2

from controller.batch import PollPolicy
from controller.catalog import Catalog
from controller.clients import Clients, Endpoints
from controller.flow import Options, execute
from controller.plan import Mode
from controller.quota import Rates, limit_shape
from controller.spec import load_batch
from controller.store import LocalStore
from tests.reliability.harness import REGION, CloudRunView, EmulatorProcess

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

# The budget under test is this project's alone: other tests' `fanout run` share the Prefect server, and
# theirs is the default project's.
PROJECT = "shared-quota-project"

RUNS_PER_MINUTE = 60
ITEMS_EACH = 12


@pytest.fixture(scope="module")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("emulator"), project=PROJECT) as emu:
        yield emu


@pytest.fixture(scope="module")
def cloud_run(emulator_process: EmulatorProcess) -> CloudRunView:
    return CloudRunView(emulator_process.url, project=PROJECT)


def _batch(batch_id: str, catalog: Catalog) -> Any:
    items = [{"key": f"k-{i:03d}", "job": "hello", "args": ["--sleep", "0.1", f"k-{i}"]} for i in range(ITEMS_EACH)]
    return load_batch({"batch_id": batch_id, "items": items}, catalog)


def _run_times(cloud_run: CloudRunView) -> list[float]:
    """When each execution was created, in seconds: one per RunJob call that reached Cloud Run."""
    times = [
        ex.create_time.timestamp()
        for job in cloud_run.jobs.list_jobs(parent=cloud_run.parent)
        for ex in cloud_run.executions.list_executions(
            request=run_v2.ListExecutionsRequest(parent=job.name, page_size=1000)
        )
    ]
    return sorted(times)


def _most_in_window(times: list[float], window: float) -> int:
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def test_two_batches_of_one_project_stay_in_one_budget(
    emulator_process: EmulatorProcess, cloud_run: CloudRunView, catalog: Catalog, tmp_path: Path, figures: Any
) -> None:
    url = emulator_process.url
    options = Options(
        project=PROJECT,
        region=REGION,
        report_to=str(tmp_path),
        mode=Mode.PER_ITEM,
        rates=Rates(run=RUNS_PER_MINUTE, write=None, read=None, logs=None),
        poll=PollPolicy(fastest=0.25, slowest=1.0),
    )
    reports: dict[str, str] = {}

    def controller(batch_id: str) -> None:
        clients = Clients(project=PROJECT, endpoints=Endpoints(cloud_run=url, logging=url))
        report, _ = execute(
            _batch(batch_id, catalog),
            catalog,
            options,
            clients=clients,
            store=LocalStore(tmp_path),
            use_prefect_tasks=False,
        )
        reports[batch_id] = report.status

    threads = [threading.Thread(target=controller, args=(b,)) for b in ("quota-a", "quota-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert reports == {"quota-a": "succeeded", "quota-b": "succeeded"}

    times = _run_times(cloud_run)
    assert len(times) == 2 * ITEMS_EACH
    burst, decay = limit_shape(RUNS_PER_MINUTE)
    # Each batch alone may run 60 per minute, so two process-local budgets would start all 24 at once; the
    # shared one grants its burst, then one RunJob per 1/decay seconds for both batches together.
    worst_10s = _most_in_window(times, 10.0)
    assert worst_10s <= burst + decay * 10 + 1
    assert _most_in_window(times, 60.0) <= RUNS_PER_MINUTE
    figures(
        "shared quota: RunJob calls of two batches in the busiest 10 s",
        f"{worst_10s} (budget {burst} + {decay * 10:.1f})",
    )
    figures("shared quota: two batches' 24 RunJob calls took", f"{times[-1] - times[0]:.1f} s at {RUNS_PER_MINUTE}/min")
