"""Only the owner acts: a controller paused (SIGSTOP) past its lease while another one took its batch over
and ran it to the end launches nothing more when it wakes, writes none of the batch's files, says so and
exits non-zero.

Both controllers are real ``fanout run`` processes (the Prefect-task launch path) with a 6 s lease
(``FANOUT_LEASE_SECONDS``), against an emulator in its own process. The paused controller's last two
launches wait in its rate limiter (``--rate run=2``: two RunJob calls a minute) while it is paused, so they
reach the point of sending RunJob only after the new owner has finished.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.reliability.harness import CloudRunView, EmulatorProcess, fanout, wait_for

pytestmark = pytest.mark.slow

LEASE = "6"


def _spec(folder: Path, batch_id: str) -> Path:
    items = [{"key": f"slow-{i}", "job": "flaky", "args": ["--sleep", "3"]} for i in range(4)]
    path = folder / f"{batch_id}.json"
    path.write_text(json.dumps({"batch_id": batch_id, "items": items}))
    return path


def test_a_paused_controller_that_lost_its_lease_launches_and_writes_nothing(
    emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: object
) -> None:
    batch_id = "paused-owner"
    spec, reports = _spec(tmp_path, batch_id), tmp_path / "reports"
    common = ["run", str(spec), "--emulator", emulator_process.url, "--report-to", str(reports)]
    common += ["--mode", "per-item", "--local-quota", "--quiet", "--poll-interval", "0.3"]
    env = {"FANOUT_WARM": "0", "FANOUT_LEASE_SECONDS": LEASE}
    first = fanout([*common, "--rate", "run=2"], env=env)
    try:
        wait_for(lambda: len(cloud_run.by_key(batch_id)) >= 2, 120, 0.2, "the first two executions")
        os.kill(first.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        # A renewal may have been under way when the process stopped: the lease is read once it is still.
        batch = reports / batch_id / "batch.json"
        time.sleep(0.5)
        until = datetime.fromisoformat(json.loads(batch.read_text())["lease_until"])
        wait_for(lambda: datetime.now(UTC) > until, float(LEASE) + 5, 0.2, "the paused controller's lease to run out")
        second = fanout(common, env=env)  # takes the batch over, adopts the two executions, runs the rest
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, out + err
        report = reports / batch_id / "report.json"
        written = {name: (reports / batch_id / name).read_bytes() for name in ("report.json", "results.jsonl")}
        assert json.loads(report.read_bytes())["summary"]["by_state"]["succeeded"] == 4
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=300)
        paused = time.monotonic() - paused_at
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.communicate()
    by_key = cloud_run.by_key(batch_id)
    executions = sum(len(runs) for runs in by_key.values())
    figures("lost lease: launch keys / executions", f"{len(by_key)} / {executions} (paused {paused:.0f}s)")
    assert len(by_key) == 4 and executions == 4, by_key
    assert first.returncode == 1, out + err
    assert "no longer holds batch 'paused-owner'" in err and "another controller took the batch over" in err
    assert "wrote none of the batch's files" in err and "Traceback" not in err
    # The new owner's files are as it wrote them.
    assert {name: (reports / batch_id / name).read_bytes() for name in written} == written
