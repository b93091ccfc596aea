"""Kill the controller with SIGKILL at a random moment, run the same batch again, and check that the batch
ends with one complete report, every item launched exactly once and in the state its arguments promise.

The controller always runs in a process of its own, separate from the emulator's (which keeps the Cloud Run
state): most trials fork it from a pre-imported forkserver running ``controller.flow.execute(...,
use_prefect_tasks=False)`` (the ``fanout run`` path minus the Prefect engine, whose start costs ~10 s per
process); a few run the real ``fanout run`` command, reporting to GCS (fake-gcs-server).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from controller.catalog import Catalog
from controller.plan import plan
from controller.spec import load_batch
from tests.reliability.harness import (
    CloudRunView,
    EmulatorProcess,
    TrialSpec,
    check_report,
    load_report,
    mixed_spec,
    start_controller,
)

pytestmark = pytest.mark.slow

TRIALS = 20
SEED = 20261128


def _launches(trial: TrialSpec, spec_path: Path) -> int:
    catalog = Catalog.from_jobs_dir()
    batch = load_batch(spec_path, catalog, batch_id=trial.batch_id)
    return len(plan(batch, catalog).launches)


def _keys(report: dict[str, Any]) -> list[str]:
    """The batch's launch keys: its id, the nonce made with its batch.json, the launch index."""
    return [launch["key"] for launch in report["launches"]]


def _duplicates(by_key: dict[str, list[Any]]) -> int:
    return sum(len(runs) - 1 for runs in by_key.values())


def _settle(cloud_run: CloudRunView, batch_id: str) -> None:
    """Nothing of the batch may still run once the controller says it is done."""
    running = cloud_run.running(batch_id)
    assert not running, f"executions still running after the final report: {[r.name for r in running]}"


@pytest.mark.slow(minutes=2.5)
def test_sigkill_and_resume_trials(
    emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: Any
) -> None:
    rng = random.Random(SEED)
    reports = tmp_path / "reports"
    reports.mkdir()
    totals = {"items": 0, "duplicates": 0, "lost": 0, "kills": 0, "kills_after_finish": 0, "complete": 0}
    started = time.monotonic()
    failures: list[str] = []
    for trial_no in range(TRIALS):
        keep = trial_no % 2 == 0
        trial = mixed_spec(rng, f"kill-{trial_no:02d}", keep_jobs=keep, max_sleep=1.0)
        spec_path = trial.write(tmp_path)
        launches = _launches(trial, spec_path)
        before = emulator_process.stats()["executions_started"]
        kills = 1 + (trial_no % 3 == 0)  # every third trial is killed twice before it may finish
        runs = 0
        while True:
            runs += 1
            out = tmp_path / f"{trial.batch_id}-run{runs}.log"
            process = start_controller(spec_path, emulator_process.url, reports, trial.batch_id, out)
            if runs <= kills:
                # Anywhere from before the batch is recorded to after the report is written.
                time.sleep(rng.uniform(0.0, 4.0))
                if process.is_alive():
                    process.kill()
                    totals["kills"] += 1
                else:
                    totals["kills_after_finish"] += 1
                process.join(30)
                continue
            process.join(120)
            assert process.exitcode == 0, (
                f"{trial.batch_id}: the final run ended with {process.exitcode}: {out.read_text()}"
            )
            break
        report = load_report(reports, trial.batch_id)
        keys = _keys(report)
        assert len(keys) == launches
        by_key = cloud_run.by_key(trial.batch_id)
        started_here = emulator_process.stats()["executions_started"] - before
        duplicates = max(_duplicates(by_key), started_here - len(keys))
        problems = check_report(report, trial, by_key, check_executions=keep)
        lost = sum(1 for p in problems if "missing" in p or "not_launched" in p)
        if set(by_key) - set(keys):
            problems.append(f"executions with unknown keys: {sorted(set(by_key) - set(keys))}")
        if keep and set(by_key) != set(keys):
            problems.append(f"launches never started: {sorted(set(keys) - set(by_key))}")
        if duplicates:
            problems.append(f"{duplicates} duplicate execution(s): {started_here} started for {len(keys)} launches")
        _settle(cloud_run, trial.batch_id)
        totals["items"] += len(trial.expected)
        totals["duplicates"] += duplicates
        totals["lost"] += lost
        totals["complete"] += not problems
        failures += [f"{trial.batch_id}: {p}" for p in problems]
    elapsed = time.monotonic() - started
    figures(
        "kill/resume trials (forked controller)",
        f"{TRIALS} trials, {totals['kills']} SIGKILLs "
        f"(+{totals['kills_after_finish']} runs finished before their kill), {totals['items']} items",
    )
    figures("kill/resume complete reports", f"{totals['complete']}/{TRIALS}")
    figures("kill/resume duplicate executions", totals["duplicates"])
    figures("kill/resume items lost", totals["lost"])
    figures("kill/resume time", f"{elapsed:.1f}s")
    assert not failures, "\n".join(failures)


def test_rerun_of_a_finished_batch_launches_nothing(
    emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: Any
) -> None:
    """Running a batch id again after it finished (one-off jobs deleted, as by default) starts nothing new
    and leaves the same report."""
    trial = mixed_spec(random.Random(7), "rerun-finished", keep_jobs=False, hello=3, flaky=0, multi_task=1, one_off=3)
    spec_path = trial.write(tmp_path)
    reports = tmp_path / "reports"
    launches = _launches(trial, spec_path)
    before = emulator_process.stats()["executions_started"]
    for run in range(2):
        process = start_controller(spec_path, emulator_process.url, reports, trial.batch_id, tmp_path / f"run{run}.log")
        process.join(120)
        assert process.exitcode == 0, (tmp_path / f"run{run}.log").read_text()
        if run == 0:
            first = load_report(reports, trial.batch_id)
    second = load_report(reports, trial.batch_id)
    started = emulator_process.stats()["executions_started"] - before
    figures("rerun of a finished batch: executions started", f"{started} for {launches} launches")
    assert started == launches
    assert [(i["key"], i["state"], i["execution"]) for i in second["items"]] == [
        (i["key"], i["state"], i["execution"]) for i in first["items"]
    ]
    assert not check_report(second, trial, cloud_run.by_key(trial.batch_id), check_executions=False)
