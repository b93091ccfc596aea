"""A task list read as a failed execution ends (for the live counts) may lag behind Cloud Run, whose lists are
eventually consistent: a short one must not stand in the report. It is read again after the batch, and every
item gets its own task's exit code."""

from __future__ import annotations

from pathlib import Path

from cloudrun_emulator import Faults, MethodFaults
from controller.catalog import Catalog
from controller.emulator_jobs import catalog_emulator
from controller.report import ItemState
from tests.reliability.harness import PROJECT, REGION, TrialSpec
from tests.reliability.test_unverified import _runner

# ListTasks leaves out tasks created in the last 60 s: longer than the whole watch of these quick items.
TASKS_LAG = Faults(methods={"Tasks.ListTasks": MethodFaults(list_lag_seconds=60.0)})


def test_a_task_list_that_lags_at_an_execution_end_is_read_again_for_the_report(
    catalog: Catalog, tmp_path: Path
) -> None:
    items = [{"key": f"fail-{i}", "job": "flaky", "task_count": 2, "args": ["--exit-code", "3"]} for i in range(3)]
    trial = TrialSpec("lagging-tasks", {"batch_id": "lagging-tasks", "items": items})
    with catalog_emulator(catalog, project=PROJECT, region=REGION) as emu:
        runner = _runner(catalog, trial, emu.url, tmp_path / "reports", {})
        runner.open_batch(project=PROJECT, region=REGION)
        runner.prepare()
        runner.launch_all()
        emu.set_faults(TASKS_LAG)
        try:
            runner.watch()
        finally:
            emu.set_faults(Faults())
        runner.collect_tasks()
        results = list(runner.item_results())
        runner.close()
    assert [(r.key, r.state, r.exit_code) for r in results] == [(f"fail-{i}", ItemState.FAILED, 3) for i in range(3)]
