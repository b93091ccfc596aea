"""406 launches (530 items) while a fifth of all API calls fail transiently and 5% of RunJob answers are lost
after Cloud Run acted: every item ends in the state its arguments promise, and no launch key has two executions.
What is at stake is per launch (one RunJob each), so the packed launches carry only enough items to span
their jobs' groups and outcomes.

Runs ``controller.flow.execute(..., use_prefect_tasks=False)`` in-process (Prefect adds nothing to what is
tested here) against an emulator of its own, since faults apply to the whole emulator.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from testenv import document_of

from cloudrun_emulator.faults import Faults, MethodFaults
from controller.batch import PollPolicy
from controller.catalog import Catalog
from controller.clients import Clients, Endpoints
from controller.emulator_jobs import catalog_emulator
from controller.flow import Options, execute
from controller.plan import plan
from controller.quota import Rates
from controller.spec import load_batch
from controller.store import open_store
from tests.reliability.harness import PROJECT, REGION, CloudRunView, check_report, mixed_spec

pytestmark = pytest.mark.slow

TRANSIENT = {429: 0.10, 503: 0.05, 500: 0.05}  # 20% of every call answered with a transient error
FAULTS = Faults(
    seed=1000,
    default=MethodFaults(error_rates=TRANSIENT),
    # RunJob: the same 20% errors, and of the calls served, 5% whose answer is lost after the execution started.
    methods={"Jobs.RunJob": MethodFaults(error_rates=TRANSIENT, drop_rate=0.05)},
)


@pytest.mark.slow(minutes=3)
def test_every_launch_runs_once_under_transient_faults(catalog: Catalog, tmp_path: Path, figures: Any) -> None:
    trial = mixed_spec(
        random.Random(1000),
        "faults-530",
        hello=100,
        hello_groups=5,
        flaky=30,
        multi_task=50,
        one_off=350,
        min_sleep=0.0,
        max_sleep=0.2,
    )
    assert len(trial.expected) == 530
    batch = load_batch(trial.spec, catalog)
    launches = plan(batch, catalog).launches
    reports = tmp_path / "reports"
    started = time.monotonic()
    with catalog_emulator(catalog, project=PROJECT, region=REGION, faults=FAULTS, max_running_tasks=64) as emu:
        options = Options(
            project=PROJECT,
            region=REGION,
            report_to=str(reports),
            concurrency=16,
            rates=Rates.unlimited(),
            poll=PollPolicy(fastest=0.5, slowest=2.0),
        )
        clients = Clients(project=PROJECT, endpoints=Endpoints(cloud_run=emu.url, logging=emu.url))
        report, _ = execute(
            batch, catalog, options, clients=clients, store=open_store(str(reports)), use_prefect_tasks=False
        )
        elapsed = time.monotonic() - started
        emu.set_faults(Faults())  # read back without faults
        by_key = CloudRunView(emu.url).by_key(batch.batch_id)
        stats = emu.stats()
        executions_started = emu.task_stats()["executions_started"]

    duplicates = sum(len(runs) - 1 for runs in by_key.values())
    problems = check_report(document_of(report), trial, by_key)
    lost = sum(1 for p in problems if "missing" in p or "not_launched" in p)
    calls = sum(stats.values())
    figures("faults: items / launches", f"{len(trial.expected)} / {len(launches)}")
    figures(
        "faults: API calls (about 20% failed)",
        f"{calls} ({stats.get('Jobs.RunJob', 0)} RunJob for {len(launches)} launches)",
    )
    figures("faults: items lost", lost)
    figures(
        "faults: duplicate executions",
        f"{duplicates} (executions started {executions_started} for {len(launches)} launches)",
    )
    figures("faults: report complete", f"{report.summary.total} items, {len(problems)} problems")
    figures("faults: time", f"{elapsed:.1f}s")
    assert not problems, "\n".join(problems[:20])
    assert set(by_key) == {launch.key for launch in report.launches}
    assert len(report.launches) == len(launches)
    assert duplicates == 0
    assert executions_started == len(launches)
