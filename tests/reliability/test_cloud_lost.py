"""Cloud Run lost mid-batch: the emulator stopped while executions run, once for good (and the user cancels),
once restarted empty on the same port. No exception escapes; the report is written and says what is known
(executions last seen running, cancellation not confirmed), never "cancelled" or "succeeded" for what was not
seen ending; the batch counts as not succeeded (``fanout run`` exits 1); no task process is left.

Runs a ``BatchRunner`` in-process against an emulator in its own process, with a short retry policy so that
Cloud Run is declared lost in seconds rather than the minute the default policy takes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.batch import BatchRunner, PollPolicy
from controller.batchfolder import open_report, store_report
from controller.catalog import Catalog
from controller.clients import Clients, Endpoints
from controller.cloudrun import CloudRun
from controller.plan import plan
from controller.quota import Budget, Rates
from controller.report import BatchStatus, ItemState, LaunchStatus, Report
from controller.spec import load_batch
from controller.store import LocalStore
from tests.reliability.harness import PROJECT, REGION, EmulatorProcess, task_processes, wait_for

pytestmark = pytest.mark.slow

LONG = 3


def _spec(batch_id: str) -> dict[str, Any]:
    def one_off(key: str, seconds: str) -> dict[str, Any]:
        return {"key": key, "image": "example.com/sh:1", "command": ["sh", "-c", 'sleep "$0"'], "args": [seconds]}

    items = [one_off(f"long-{i}", "120") for i in range(LONG)]
    items.append(one_off("quick", "0"))
    items += [{"key": f"packed-{i}", "job": "hello", "args": ["--sleep", "120", f"packed-{i}"]} for i in range(2)]
    return {"batch_id": batch_id, "keep_jobs": True, "items": items}


def _run_until_lost(
    catalog: Catalog, emu: EmulatorProcess, tmp_path: Path, batch_id: str, *, restart: bool, cancel: bool
) -> tuple[Report, EmulatorProcess | None]:
    batch = load_batch(_spec(batch_id), catalog)
    reports = tmp_path / "reports"
    clients = Clients(project=PROJECT, endpoints=Endpoints(cloud_run=emu.url, logging=emu.url))
    cloud = CloudRun(
        clients, PROJECT, REGION, Budget.from_rates(Rates.unlimited()), attempts=4, sleep=lambda s: time.sleep(0.3)
    )
    runner = BatchRunner(
        plan(batch, catalog, manifest_root=str(reports / batch_id / "manifests")),
        cloud,
        LocalStore(reports),
        poll=PollPolicy(fastest=0.25, slowest=0.5),
    )
    runner.open_batch(project=PROJECT, region=REGION)
    runner.prepare()
    runner.adopt_existing()
    runner.launch_all()
    watcher = threading.Thread(target=runner.watch)
    watcher.start()
    # Every long item runs (one process each; the packed ones too) and the quick one has ended.
    wait_for(lambda: len(task_processes(batch_id)) >= LONG + 2, 120, what="the long tasks to run")
    wait_for(lambda: runner.counts().get(ItemState.SUCCEEDED, 0) == 1, 60, what="the quick item to be seen ending")
    emu.stop()
    restarted = None
    if restart:
        restarted = EmulatorProcess(tmp_path / "restarted", port=int(emu.url.rsplit(":", 1)[1])).start()
    watcher.join(120)
    assert not watcher.is_alive(), "the controller kept watching a lost Cloud Run"
    if cancel:
        runner.cancel()  # what `execute` does on Ctrl-C or SIGTERM
    runner.collect_tasks()
    report = runner.report(runner.item_results())
    store_report(runner.store, report)
    runner.close()
    return report, restarted


def _check(report: Report, tmp_path: Path, batch_id: str, *, cancelled: bool) -> None:
    stored = open_report(str(tmp_path / "reports" / batch_id)).report
    assert stored.summary == report.summary
    items = {item.key: item for item in report.items}
    assert items["quick"].state is ItemState.SUCCEEDED
    for key in [f"long-{i}" for i in range(LONG)] + ["packed-0", "packed-1"]:
        item = items[key]
        assert item.state is ItemState.FAILED, (key, item.state, item.reason)
        assert "outcome unknown" in (item.reason or ""), (key, item.reason)
        assert "last seen running" in (item.reason or ""), (key, item.reason)
    unfinished = [launch for launch in report.launches if launch.state is LaunchStatus.UNFINISHED]
    assert len(unfinished) == LONG + 1  # the two packed items share one execution
    assert any("Cloud Run stopped answering" in p or "could not cancel" in p for p in report.problems)
    assert report.status is (BatchStatus.CANCELLED if cancelled else BatchStatus.FAILED)
    assert report.summary.not_succeeded == LONG + 2  # `fanout run` exits 1
    wait_for(lambda: not task_processes(batch_id), 30, what="no task process of the batch to be left")


def test_cloud_run_stopped_for_good_while_the_user_cancels(catalog: Catalog, tmp_path: Path, figures: Any) -> None:
    emu = EmulatorProcess(tmp_path / "emulator").start()
    try:
        report, _ = _run_until_lost(catalog, emu, tmp_path, "lost-cancel", restart=False, cancel=True)
    finally:
        emu.stop()
    _check(report, tmp_path, "lost-cancel", cancelled=True)
    figures(
        "cloud lost (stopped, user cancels)",
        f"report written, {report.summary.not_succeeded} items outcome unknown, 0 reported cancelled, "
        "status cancelled, no task process left",
    )


def test_cloud_run_restarted_empty(catalog: Catalog, tmp_path: Path, figures: Any) -> None:
    emu = EmulatorProcess(tmp_path / "emulator").start()
    restarted = None
    try:
        report, restarted = _run_until_lost(catalog, emu, tmp_path, "lost-restart", restart=True, cancel=False)
    finally:
        emu.stop()
        if restarted is not None:
            restarted.stop()
    _check(report, tmp_path, "lost-restart", cancelled=False)
    figures(
        "cloud lost (restarted empty)",
        f"report written, {report.summary.not_succeeded} items outcome unknown, status failed (exit 1), "
        "no task process left",
    )
