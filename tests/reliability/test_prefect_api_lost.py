"""The Prefect API is a window on a batch, never its master: a ``fanout run`` whose Prefect server is killed
(SIGKILL) once its executions started cancels none of them, and reports each item as Cloud Run says it
ended.

The run has a Prefect server of its own (its own FANOUT_CACHE_DIR and PREFECT_HOME, on a copy of the test
run's migrated database), so that killing it leaves the suite's shared server alone.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from testenv import migrated_prefect_database, report_document

from tests.reliability.harness import CloudRunView, EmulatorProcess, fanout, wait_for

pytestmark = pytest.mark.slow(minutes=2)


def _server_pid(cache: Path) -> int | None:
    try:
        return int(json.loads((cache / "prefect-server" / "state.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_the_prefect_server_killed_mid_batch_cancels_nothing(
    emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: object
) -> None:
    batch_id = "prefect-killed"
    items = [{"key": f"long-{i}", "job": "flaky", "timeout": "300s", "args": ["--sleep", "12"]} for i in range(2)]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"batch_id": batch_id, "items": items}))
    cache, home = tmp_path / "cache", tmp_path / "prefect-home"
    migrated_prefect_database(home / "prefect.db")
    env = {
        "FANOUT_WARM": "0",
        "FANOUT_CACHE_DIR": str(cache),
        "PREFECT_HOME": str(home),
        # A user's Prefect client: its default retries (~1 minute against a server that is gone).
        "PREFECT_CLIENT_MAX_RETRIES": "5",
    }
    args = ["run", str(spec), "--emulator", emulator_process.url, "--report-to", str(tmp_path / "reports")]
    args += ["--mode", "per-item", "--quiet", "--poll-interval", "0.5"]
    proc = fanout(args, env=env)
    try:
        wait_for(lambda: len(cloud_run.by_key(batch_id)) == 2, 240, 0.3, "both executions")
        server = _server_pid(cache)
        assert server is not None
        os.kill(server, signal.SIGKILL)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    executions = cloud_run.all_executions(batch_id)
    figures("Prefect API killed: executions cancelled", sum(e.cancelled for e in executions))
    assert len(executions) == 2 and all(e.done and e.cancelled == 0 for e in executions), executions
    report = report_document(tmp_path / "reports" / batch_id)
    assert [item["state"] for item in report["items"]] == ["succeeded", "succeeded"], report["problems"]
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err, err

