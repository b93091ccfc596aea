"""README's on-demand deployment section, followed literally: its shell block runs as written, in bash, from
the root of a copy of this checkout (so `prefect deploy` records that copy and the reports land there), on
the test run's local Prefect server (tests/conftest.py). Both `--watch` commands must return when their flow
run ends, each batch must end in the state its items call for, and the worker must stop at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from testenv import migrated_prefect_database, report_document

from controller import prefect_server

pytestmark = pytest.mark.slow(minutes=3)

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
# A fresh flow-run process imports Prefect and the controller (~1 min on a loaded 2-core machine), and the
# worker polls every 10 s by default; two batches after a deploy, with the server's start if it is the first.
DEADLINE = prefect_server.start_timeout() + 480.0


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### From Prefect") :]
    found = re.search(r"On demand, on this machine.*?```sh\n(.*?)```", section, re.S)
    assert found, "README's on-demand block"
    return found.group(1)


def _checkout_copy(dest: Path) -> None:
    """The checkout's tracked files as a fresh clone has them, with this run's .venv (make install's)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(VENV)


def test_the_readme_deploys_runs_and_watches_batches_to_their_end(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    _checkout_copy(checkout)
    block = readme_block()
    assert "prefect deployment run" in block and "--watch" in block
    # As a user's shell: no Prefect API configured (the block points prefect at the local server), no
    # emulator (the flow starts its own, as `fanout run` does), wide output so ids stay on one line.
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "FANOUT_EMULATOR_HOST")}
    env.update(COLUMNS="200", PREFECT_CLI_WRAP_LINES="false", PREFECT_WORKER_QUERY_SECONDS="2")
    # A local server of its own (its own cache folder, so its own database): the deployment test deploys the
    # same deployment name and pool to the test run's shared server.
    cache = tmp_path / "cache"
    migrated_prefect_database(prefect_server.server_home(cache / "prefect-server") / "prefect.db")
    env["FANOUT_CACHE_DIR"] = str(cache)
    try:
        done = subprocess.run(
            ["bash", "-c", block],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,  # the proof that both --watch commands returned
            start_new_session=True,
            check=False,
        )
        # `kill %1` stopped the worker, and with it every process of the block.
        _wait_until(lambda: not _running_in(checkout), 90, "the worker to stop")
    finally:
        for pid in _running_in(checkout):  # after a failure: nothing of the block outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        prefect_server.stop(cache / "prefect-server")
    output = done.stdout + done.stderr
    assert "Starting temporary server" not in output, output[-5000:]
    assert "Flow run finished successfully in 'Completed'." in output, output[-5000:]
    assert "Flow run finished in state 'Failed'." in output, output[-5000:]

    reports = {
        document["status"]: document
        for document in map(report_document, sorted((checkout / "reports").glob("*/report.json")))
    }
    assert sorted(reports) == ["failed", "succeeded"], sorted(reports)
    assert len(reports["succeeded"]["items"]) == 25  # examples/hello.yaml
    assert reports["failed"]["summary"]["by_state"]["failed"] >= 1  # examples/mixed.yaml fails by design


def _running_in(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder`` (or below it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:  # gone meanwhile
                continue
            if cwd == str(folder) or cwd.startswith(f"{folder}/"):
                found.append(int(entry.name))
    return found


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.2)
