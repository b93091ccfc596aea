"""One owner per batch. Two controllers started at the same moment on one batch: exactly one runs it, the
other is refused (or, coming after the first ended, finds the finished batch) and nothing runs twice. A batch
id reused with another spec is refused without touching the stored batch; with another ``--report-to`` it is
another batch, which never adopts the first one's executions.

Controllers run ``controller.flow.execute(..., use_prefect_tasks=False)`` in threads of this process (the
``fanout run`` path minus the Prefect engine), against an emulator in its own process; one ``fanout run``
checks the refusal as a user sees it.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from testenv import BUCKET, document_of

from controller.batch import BatchConflict, BatchOwned, PollPolicy
from controller.catalog import Catalog
from controller.clients import Clients, Endpoints
from controller.flow import Options, execute
from controller.plan import plan
from controller.quota import Rates
from controller.report import Report
from controller.spec import load_batch
from controller.store import GcsStore, LocalStore, Store
from tests.reliability.harness import (
    PROJECT,
    REGION,
    CloudRunView,
    EmulatorProcess,
    TrialSpec,
    check_report,
    fanout,
    mixed_spec,
)

pytestmark = pytest.mark.slow

TRIALS = 20
SEED = 20261130


def _run(trial: TrialSpec, catalog: Catalog, store: Store, url: str, spec: dict[str, Any] | None = None) -> Report:
    batch = load_batch(spec or trial.spec, catalog)
    options = Options(
        project=PROJECT,
        region=REGION,
        report_to=store.url(""),
        rates=Rates.unlimited(),
        poll=PollPolicy(fastest=0.25, slowest=1.0),
    )
    clients = Clients(project=PROJECT, endpoints=Endpoints(cloud_run=url, logging=url))
    report, _ = execute(batch, catalog, options, clients=clients, store=store, use_prefect_tasks=False)
    return report


def test_two_controllers_started_together_run_a_batch_once(
    gcs: Any, emulator_process: EmulatorProcess, cloud_run: CloudRunView, catalog: Catalog, tmp_path: Path, figures: Any
) -> None:
    rng = random.Random(SEED)
    totals = {"refused": 0, "finished_found": 0, "duplicates": 0, "complete": 0}
    failures: list[str] = []
    started = time.monotonic()
    for trial_no in range(TRIALS):
        trial = mixed_spec(
            rng, f"owner-{trial_no:02d}", hello=2, flaky=0, multi_task=1, one_off=2, min_sleep=0.1, max_sleep=0.6
        )
        # Half the trials keep the batch in a local folder, half in GCS (fake-gcs-server).
        store: Store = LocalStore(tmp_path / "reports") if trial_no % 2 else GcsStore(gcs, BUCKET, "ownership")
        launches = len(plan(load_batch(trial.spec, catalog), catalog).launches)
        before = emulator_process.stats()["executions_started"]
        barrier = threading.Barrier(2)
        outcomes: list[Report | BaseException] = []

        def controller(
            store: Store = store,
            trial: TrialSpec = trial,
            barrier: threading.Barrier = barrier,
            outcomes: list[Report | BaseException] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                outcomes.append(_run(trial, catalog, store, emulator_process.url))
            except BaseException as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=controller) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        reports = [o for o in outcomes if isinstance(o, Report)]
        refusals = [o for o in outcomes if isinstance(o, BatchOwned)]
        others = [o for o in outcomes if not isinstance(o, Report | BatchOwned)]
        by_key = cloud_run.by_key(trial.batch_id)
        duplicates = emulator_process.stats()["executions_started"] - before - launches
        problems = [f"unexpected {type(o).__name__}: {o}" for o in others]
        if len(outcomes) != 2 or not reports:
            problems.append(f"{len(reports)} report(s) and {len(refusals)} refusal(s) from 2 controllers")
        else:
            problems += check_report(document_of(reports[0]), trial, by_key)
        if refusals:
            assert "is being run by another controller (host" in str(refusals[0])
        if duplicates or any(len(runs) > 1 for runs in by_key.values()):
            problems.append(f"{duplicates} duplicate execution(s) for {launches} launches")
        totals["refused"] += len(refusals)
        totals["finished_found"] += len(reports) == 2
        totals["duplicates"] += max(0, duplicates)
        totals["complete"] += not problems
        failures += [f"{trial.batch_id}: {p}" for p in problems]
    figures("concurrent controllers: trials", f"{TRIALS} (two controllers each, half local, half GCS)")
    figures(
        "concurrent controllers: second controller",
        f"refused {totals['refused']}, found the batch finished {totals['finished_found']}",
    )
    figures("concurrent controllers: duplicate executions", totals["duplicates"])
    figures("concurrent controllers: complete reports", f"{totals['complete']}/{TRIALS}")
    figures("concurrent controllers: time", f"{time.monotonic() - started:.1f}s")
    assert not failures, "\n".join(failures)


def test_a_reused_batch_id_with_another_spec(
    emulator_process: EmulatorProcess, cloud_run: CloudRunView, catalog: Catalog, tmp_path: Path, figures: Any
) -> None:
    rng = random.Random(12)
    first = mixed_spec(rng, "reused", hello=0, flaky=0, multi_task=0, one_off=3, keep_jobs=False, max_sleep=0.3)
    other = mixed_spec(rng, "reused", hello=2, flaky=0, multi_task=0, one_off=2, max_sleep=0.3)
    folder = tmp_path / "reports"
    store = LocalStore(folder)
    report = _run(first, catalog, store, emulator_process.url)
    assert not check_report(document_of(report), first, cloud_run.by_key("reused"), check_executions=False)
    stored = {name: (folder / "reused" / name).read_bytes() for name in ("batch.json", "report.json")}
    calls = emulator_process.stats()["requests"].get("Jobs.RunJob", 0)

    # Another spec, same folder: refused before any call, nothing written; as a user sees it, exit 2.
    with pytest.raises(BatchConflict, match="already used for a different spec"):
        _run(other, catalog, store, emulator_process.url)
    spec_path = other.write(tmp_path)
    cli = fanout(
        ["run", str(spec_path), "--report-to", str(folder), "--quiet"],
        env={"FANOUT_EMULATOR_HOST": emulator_process.url, "FANOUT_PROJECT": PROJECT},
    )
    out, err = cli.communicate(timeout=300)
    assert cli.returncode == 2, out + err
    assert "Traceback" not in out + err  # Prefect's engine logs the flow's exception; the console leaves it out
    assert "fanout: batch id 'reused' was already used for a different spec" in err, err
    assert {name: (folder / "reused" / name).read_bytes() for name in stored} == stored
    # The first spec again: its report stands, nothing runs (its one-off job was deleted at its end).
    again = _run(first, catalog, store, emulator_process.url)
    assert [(i.key, i.state, i.execution) for i in again.items] == [(i.key, i.state, i.execution) for i in report.items]
    assert (folder / "reused" / "report.json").read_bytes() == stored["report.json"]
    assert emulator_process.stats()["requests"].get("Jobs.RunJob", 0) == calls

    # Another spec and another folder: another batch under the same id, which adopts none of the first's.
    elsewhere = _run(other, catalog, LocalStore(tmp_path / "elsewhere"), emulator_process.url)
    runs = emulator_process.stats()["requests"].get("Jobs.RunJob", 0) - calls
    assert runs == len(elsewhere.launches)
    assert {i.execution for i in elsewhere.items}.isdisjoint({i.execution for i in report.items})
    assert not check_report(document_of(elsewhere), other, cloud_run.by_key("reused"))
    figures("reused batch id, other spec, same folder", "refused (exit 2), stored batch untouched, 0 RunJob")
    figures(
        "reused batch id, other spec, other folder", f"{runs} RunJob for {len(elsewhere.launches)} launches, 0 adopted"
    )
