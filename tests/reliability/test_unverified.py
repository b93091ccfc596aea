"""A launch that cannot be verified is never sent again. RunJob's answers are lost (Cloud Run acted) while
ListExecutions fails, so the launch keys cannot be looked up: those launches are reported as unknown, not
re-sent, and adopted once the list answers again. With a list that lags behind RunJob, the key is looked for
long enough to be seen. Duplicates: 0 in both.

Runs a ``BatchRunner`` in-process against an emulator of its own (faults apply to the whole emulator), with
the faults switched on for the launches only.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from testenv import document_of

from cloudrun_emulator import Emulator, Faults, MethodFaults
from controller.batch import BatchRunner, PollPolicy
from controller.catalog import Catalog
from controller.clients import Clients, Endpoints
from controller.cloudrun import CloudRun
from controller.emulator_jobs import catalog_emulator
from controller.plan import plan
from controller.quota import Budget, Rates
from controller.report import ItemState, LaunchStatus
from controller.spec import load_batch
from controller.store import LocalStore
from tests.reliability.harness import PROJECT, REGION, CloudRunView, TrialSpec, check_report, mixed_spec

pytestmark = pytest.mark.slow

# Half of RunJob's answers lost after the execution started; every ListExecutions answered 503.
LOOKUPS_FAIL = Faults(
    seed=41,
    methods={
        "Jobs.RunJob": MethodFaults(drop_rate=0.5),
        "Executions.ListExecutions": MethodFaults(error_rates={503: 1.0}),
    },
)
# RunJob: 20% refused with a 503 (not acted), 40% of the rest acted with the answer lost; the list shows an
# execution only 1.5 s after it was created.
LIST_LAGS = Faults(
    seed=42,
    methods={
        "Jobs.RunJob": MethodFaults(error_rates={503: 0.2}, drop_rate=0.4),
        "Executions.ListExecutions": MethodFaults(list_lag_seconds=1.5),
    },
)


def _runner(catalog: Catalog, trial: TrialSpec, url: str, reports: Path, cloud: dict[str, Any]) -> BatchRunner:
    batch = load_batch(trial.spec, catalog)
    clients = Clients(project=PROJECT, endpoints=Endpoints(cloud_run=url, logging=url))
    run = CloudRun(clients, PROJECT, REGION, Budget.from_rates(Rates.unlimited()), **cloud)
    return BatchRunner(
        plan(batch, catalog, manifest_root=str(reports / batch.batch_id / "manifests")),
        run,
        LocalStore(reports),
        poll=PollPolicy(fastest=0.25, slowest=1.0),
    )


def _launch_under(emu: Emulator, runner: BatchRunner, faults: Faults) -> None:
    runner.open_batch(project=PROJECT, region=REGION)
    runner.prepare()
    runner.adopt_existing()
    emu.set_faults(faults)
    try:
        runner.launch_all()
    finally:
        emu.set_faults(Faults())


def _duplicates(view: CloudRunView, batch_id: str) -> int:
    return sum(len(runs) - 1 for runs in view.by_key(batch_id).values())


def test_unverifiable_launches_are_never_sent_twice(catalog: Catalog, tmp_path: Path, figures: Any) -> None:
    rng = random.Random(41)
    lost = mixed_spec(rng, "unverified", hello=4, flaky=0, multi_task=2, one_off=24, max_sleep=0.3)
    lagging = mixed_spec(rng, "lagging", hello=4, flaky=0, multi_task=2, one_off=24, max_sleep=0.3)
    reports = tmp_path / "reports"
    with catalog_emulator(catalog, project=PROJECT, region=REGION, max_running_tasks=64) as emu:
        view = CloudRunView(emu.url)
        # Look-ups fail: each attempt is retried at once (the policy's waits are not what is tested here).
        runner = _runner(catalog, lost, emu.url, reports, {"attempts": 3, "sleep": lambda _: None})
        _launch_under(emu, runner, LOOKUPS_FAIL)
        unknown = [s for s in runner.states if s.unverified is not None]
        run_jobs = emu.stats().get("Jobs.RunJob", 0)
        started = emu.task_stats()["executions_started"]
        assert unknown, "the seed should lose some answers"
        assert run_jobs == len(runner.states)  # not one RunJob sent again
        assert started == len(runner.states) and _duplicates(view, "unverified") == 0
        # Until the list answers again, the report says what is known.
        launches = {r.index: r for r in runner.launch_results()}
        for state in unknown:
            result = launches[state.launch.index]
            assert result.state is LaunchStatus.UNKNOWN and "could not be listed" in (result.error or "")
        items = {i.key: i for i in runner.item_results()}
        for state in unknown:
            for item in state.launch.items:
                assert items[item.key].state is ItemState.FAILED
                assert (items[item.key].reason or "").startswith("outcome unknown: RunJob's answer was lost")
        # The list answers again: watching adopts them, and the batch ends complete, each launch run once.
        runner.watch()
        runner.collect_tasks()
        report = runner.report(runner.item_results())
        runner.close()
        problems = check_report(document_of(report), lost, view.by_key("unverified"))
        assert not problems, "\n".join(problems)
        figures(
            "unverifiable launches: answers lost, look-ups failing",
            f"{len(unknown)} of {len(runner.states)} launches unverified, reported unknown, 0 sent again",
        )
        figures("unverifiable launches: duplicate executions", _duplicates(view, "unverified"))

        began = time.monotonic()
        runner = _runner(catalog, lagging, emu.url, reports, {"list_lag_seconds": 4.0})
        before = emu.stats().get("Jobs.RunJob", 0)
        _launch_under(emu, runner, LIST_LAGS)
        resent = emu.stats().get("Jobs.RunJob", 0) - before - len(runner.states)
        runner.watch()
        runner.collect_tasks()
        report = runner.report(runner.item_results())
        runner.close()
        problems = check_report(document_of(report), lagging, view.by_key("lagging"))
        duplicates = _duplicates(view, "lagging")
        figures(
            "lagging list (1.5 s): RunJob",
            f"{len(runner.states) + resent} calls for {len(runner.states)} launches "
            f"({resent} sent again after the list showed no execution for 4 s)",
        )
        figures("lagging list: duplicate executions", duplicates)
        figures("lagging list: time", f"{time.monotonic() - began:.1f}s")
        assert resent > 0, "the seed should refuse some RunJob calls"
        assert duplicates == 0
        assert not problems, "\n".join(problems)
