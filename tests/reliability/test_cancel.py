"""Cancellation: Ctrl-C (SIGINT) and SIGTERM to ``fanout run``, and a batch deadline. Every execution of the
batch is cancelled through the API; none is left running 10 s after the controller says it cancelled; the
report lists the cancelled items; signals end the command with exit code 130. A controller killed while it
cancels (as a Prefect runner SIGKILLs 30 s after its SIGTERM) still leaves a report with every item.
"""

from __future__ import annotations

import inspect
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from controller import prefect_server
from controller.batch import BatchRunner
from controller.outcomes import INTERIM_PROBLEM
from tests.reliability.harness import (
    CloudRunView,
    EmulatorProcess,
    fanout,
    load_report,
    mixed_spec,
    task_processes,
    wait_for,
)

pytestmark = pytest.mark.slow

GRACE = 10.0  # seconds after the controller says it cancelled by which nothing of the batch may run
# What the controller waits for after a signal, each with its own bound: RunJob calls in flight, then the
# executions to stop (BatchRunner.cancel's wait_seconds, each), then log tails, the report and its exit.
CANCEL_WAIT = inspect.signature(BatchRunner.cancel).parameters["wait_seconds"].default
EXIT_AFTER_SIGNAL = 2 * CANCEL_WAIT + 60.0
# Before the signal: the controller starts (the shared local Prefect server too, if it is the first) and
# launches.
RUNNING_WITHIN = prefect_server.start_timeout() + 60.0


def _long_batch(batch_id: str) -> Any:
    """Packed, per-item and one-off launches whose tasks all run for a minute."""
    return mixed_spec(random.Random(3), batch_id, hello=6, flaky=3, multi_task=2, one_off=3, min_sleep=60, max_sleep=61)


def _check_cancelled(
    cloud_run: CloudRunView, batch_id: str, said_at: float, figures: Any, label: str, *, wait: bool = False
) -> None:
    """No execution of the batch runs when the controller exits (stricter than the acceptance's 10 s), nor,
    with ``wait``, 10 s after it said it cancelled."""
    running_now = cloud_run.running(batch_id)
    assert not running_now, [e.name for e in running_now]
    if wait and (pause := said_at + GRACE - time.monotonic()) > 0:
        time.sleep(pause)
    running_later = cloud_run.running(batch_id)
    executions = cloud_run.all_executions(batch_id)
    figures(
        f"cancel ({label}): executions running at controller exit / {GRACE:.0f}s after"
        if wait
        else f"cancel ({label}): executions running at controller exit / after checking",
        f"{len(running_now)} / {len(running_later)} of {len(executions)}",
    )
    assert not running_later, [e.name for e in running_later]
    assert executions and all(e.done for e in executions)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_cancels_every_execution(
    sig: signal.Signals, emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: Any
) -> None:
    batch_id = f"cancel-{sig.name.lower()}"
    trial = _long_batch(batch_id)
    spec = trial.write(tmp_path)
    reports = tmp_path / "reports"
    proc = fanout(["run", str(spec), "--emulator", emulator_process.url, "--report-to", str(reports), "--quiet"])
    # Interrupt once every launch has started and tasks run.
    wait_for(
        lambda: len([e for e in cloud_run.running(batch_id) if e.running]) >= 5,
        RUNNING_WITHIN,
        0.3,
        "running executions",
    )
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=EXIT_AFTER_SIGNAL)
    said_at = time.monotonic()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    _check_cancelled(cloud_run, batch_id, said_at, figures, sig.name, wait=sig == signal.SIGINT)
    report = load_report(reports, batch_id)
    states = {item["state"] for item in report["items"]}
    figures(f"cancel ({sig.name}): report", f"status {report['status']}, item states {sorted(states)}")
    assert report["status"] == "cancelled"
    assert len(report["items"]) == len(trial.expected)
    assert states <= {"cancelled", "not_launched"} and "cancelled" in states
    assert f"report: {reports / batch_id / 'report.json'}" in out


def test_deadline_cancels_every_execution(
    emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: Any
) -> None:
    batch_id = "cancel-deadline"
    trial = _long_batch(batch_id)
    spec = trial.write(tmp_path)
    reports = tmp_path / "reports"
    proc = fanout(
        [
            "run",
            str(spec),
            "--emulator",
            emulator_process.url,
            "--report-to",
            str(reports),
            "--deadline",
            "20s",
            "--quiet",
        ]
    )
    out, err = proc.communicate(timeout=RUNNING_WITHIN + 20 + EXIT_AFTER_SIGNAL)  # the deadline is 20 s
    said_at = time.monotonic()
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    _check_cancelled(cloud_run, batch_id, said_at, figures, "deadline")
    report = load_report(reports, batch_id)
    assert report["status"] == "cancelled"
    assert any("deadline" in problem for problem in report["problems"]), report["problems"]
    assert {item["state"] for item in report["items"]} <= {"cancelled", "not_launched"}
    assert f"report: {reports / batch_id / 'report.json'}" in out


def test_a_controller_killed_while_it_cancels_leaves_an_interim_report(tmp_path: Path, figures: Any) -> None:
    """SIGTERM, then SIGKILL while the cancellation waits on Cloud Run (CancelExecution answers after a
    minute here): the report stored before the cancellation lists every item, none as cancelled."""
    batch_id = "cancel-killed"
    trial = mixed_spec(
        random.Random(4), batch_id, hello=3, flaky=2, multi_task=1, one_off=0, min_sleep=60, max_sleep=61
    )
    spec = trial.write(tmp_path)
    reports = tmp_path / "reports"
    slow_cancel = {"methods": {"Executions.CancelExecution": {"latency_seconds": 60}}}
    emulator = EmulatorProcess(tmp_path / "emulator", faults=slow_cancel).start()
    cloud_run = CloudRunView(emulator.url)
    # FANOUT_WARM=0: the controller is this process, not a warm host's child that a SIGKILL would not reach.
    args = ["run", str(spec), "--emulator", emulator.url, "--report-to", str(reports), "--quiet"]
    # Its output goes to a file: nothing reads a pipe while it runs, and a full one would stop it.
    output = tmp_path / "controller.log"
    with output.open("w") as sink:
        proc = fanout(args, env={"FANOUT_WARM": "0"}, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len([e for e in cloud_run.running(batch_id) if e.running]) >= 3, RUNNING_WITHIN, 0.3, "runs")
        proc.send_signal(signal.SIGTERM)
        path = reports / batch_id / "report.json"
        wait_for(path.exists, EXIT_AFTER_SIGNAL, 0.2, "the interim report")
        try:
            wait_for(lambda: emulator.stats()["requests"].get("Executions.CancelExecution"), 60, 0.2, "a cancel call")
        except AssertionError as missing:
            raise AssertionError(f"{missing}; the controller's output ends:\n{output.read_text()[-4000:]}") from None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        report = load_report(reports, batch_id)
        states = sorted({item["state"] for item in report["items"]})
        figures("cancel (killed while cancelling): interim report", f"status {report['status']}, states {states}")
        assert report["problems"][0] == INTERIM_PROBLEM
        assert report["status"] == "cancelled"
        assert sorted(item["key"] for item in report["items"]) == sorted(trial.expected)
        launched = [item for item in report["items"] if item["execution"]]
        assert launched and all(item["state"] != "cancelled" for item in report["items"])
        unknown = [i for i in launched if i["reason"].startswith("outcome unknown: the batch was interrupted; it was")]
        assert unknown, [item["reason"] for item in launched]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        emulator.stop()
    assert not task_processes(batch_id), "the emulator stopped every task it ran"
