"""A disk that fills up while the batch runs, after the items ran: ``fanout run`` in a mount namespace of its
own with its report folder on a 24 MiB tmpfs (over the 16 MiB the start-up check asks for), which one item
fills. The run must say why the report is missing, print the summary and exit 1 (the items ran), never 2
(which says the input was invalid and nothing was launched)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FILL = (
    "import sys\ntry:\n    with open(sys.argv[1], 'wb') as f:\n        while True:\n"
    "            f.write(bytes(1 << 16))\n            f.flush()\nexcept OSError:\n    pass\n"
)


def _namespaces_available() -> bool:
    try:
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces_available(), reason="needs unshare -rm (user and mount namespaces)")
@pytest.mark.usefixtures("prefect_server")
def test_a_disk_that_fills_after_the_items_ran_is_said_with_the_summary_and_exit_1(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    one_off = {"image": "example.com/no-runner:1"}
    batch = {
        "batch_id": "disk-full",
        "items": [
            {"key": "fills", **one_off, "command": [sys.executable, "-c", FILL, str(disk / "filler")]},
            {"key": "plain", **one_off, "command": [sys.executable, "-c", "print('ran')"]},
        ],
    }
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(batch))
    command = [
        sys.executable, "-m", "controller.cli", "run", str(spec), "--report-to", str(disk / "reports"),
        "--poll-interval", "0.3", "--quiet",
    ]  # fmt: skip
    script = f"mount -t tmpfs -o size=24m tmpfs {shlex.quote(str(disk))} && exec {shlex.join(command)}"
    env = {**os.environ, "FANOUT_EMULATOR_HOST": ""}  # the embedded emulator: its tasks share the namespace

    namespaced = ["unshare", "-rm", "sh", "-c", script]
    workdir = tmp_path / "work"  # where the report goes instead: a folder in the working directory
    workdir.mkdir()
    result = subprocess.run(namespaced, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 1, result.stderr
    assert "all 2 items succeeded" in result.stdout  # the summary, though the report could not be stored
    copy = workdir / "fanout-unstored-reports" / "disk-full"
    assert f"fanout: the report could not be stored at {disk / 'reports' / 'disk-full' / 'report.json'}: " in (
        result.stderr
    )
    assert f"cannot write {disk / 'reports'}" in result.stderr and f"this copy was written to {copy}" in result.stderr
    assert "No space left on device" in result.stderr
    assert json.loads((copy / "report.json").read_text())["summary"]["total"] == 2
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.skipif(not _namespaces_available(), reason="needs unshare -rm (user and mount namespaces)")
def test_a_full_disk_at_start_is_refused_with_the_threshold_it_missed(tmp_path: Path) -> None:
    probe = [
        sys.executable, "-c",
        "import pathlib, sys; from controller.cli import writable_folder_problem as w;"
        "print(w(pathlib.Path(sys.argv[1])))",
        str(tmp_path),
    ]  # fmt: skip
    script = f"mount -t tmpfs -o size=2m tmpfs {shlex.quote(str(tmp_path))} && exec {shlex.join(probe)}"
    namespaced = ["unshare", "-rm", "sh", "-c", script]
    result = subprocess.run(namespaced, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert f"the disk of {tmp_path} is full: 2,097,152 bytes free, under the 16,777,216 a report needs" in result.stdout
