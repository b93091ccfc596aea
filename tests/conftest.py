"""Fixtures shared by every test area: the job catalog, the emulators and a Prefect API server, and the
figures the reliability suite prints.

Each service is started once per test session (per xdist worker) and reached only through the official
clients.

Figures: a test records them with the ``figures`` fixture. They travel on the test report's
``user_properties`` (so they reach the xdist controller and JUnit XML) and are printed twice: at once, one
``[reliability] name: value`` line on the terminal (written past pytest's capture, so it shows with or
without ``-s`` and from xdist workers too), and again as a "reliability figures" section at the end of the
session (these hooks live here, in a conftest the terminal-owning xdist controller loads too).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.offline import apply_quiet_defaults

apply_quiet_defaults()
os.environ.setdefault("DO_NOT_TRACK", "1")
# SIGINT reaches the commands the tests start as a Ctrl-C in a terminal would, however the run was started. A
# background job of a non-interactive shell (`cmd &` in a script, nohup, xargs -P) starts with SIGINT ignored,
# every process it starts inherits that, and a process that finds SIGINT ignored keeps it so: the tests that
# interrupt a `fanout run` with SIGINT would watch it run to the end, and the Prefect worker the deployment
# tests stop with SIGINT would not stop. Handled here, it is the default again in the processes started from
# here (the xdist workers and theirs).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# A Prefect server's start on a fresh database (imports, then its migrations) is ~20 s of CPU on an idle
# machine; beside the other test worker and its task processes it has taken over 120 s on CI. The setting is
# a deadline for the server to answer (a start returns as soon as it does), so it is generous.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
# The run's one Prefect server is on SQLite and serves every worker's flows and commands. In a make test beside
# two CPU hogs, early on while the longest tests run at once, it answered a flow-run creation 503 (its answer
# to a database error it counts as passing, such as a locked SQLite database; Prefect's client retries it)
# for the client's whole default budget, 5 retries over ~62 s, and the test failed. Two more retries stretch
# the budget to ~4 minutes; a request that gets through earlier waits no longer than before.
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "7")
# Every `fanout run` of the tests keeps its API-call budget in its own process, as their flows do
# (FLOW_PARAMS in tests/testenv.py): shared through the run's one Prefect server, the budget costs a round
# trip to it per Cloud Run call, and the commands of every worker would draw on one project's budget.
# tests/unit/test_quota_shared.py and tests/reliability/test_shared_quota.py test the shared budget.
os.environ.setdefault("FANOUT_LOCAL_QUOTA", "1")

from testenv import (  # noqa: E402
    BUCKET,
    PREFECT_DB_TEMPLATE,
    PROJECT,
    REGION,
    fake_gcs_server,
    migrated_prefect_database,
)

_SHARED_STATE = "FANOUT_CACHE_DIR"  # where the `fanout run` subprocesses of this test run find their server
_owned_state = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Every ``fanout run`` subprocess of this test run (of every xdist worker: they inherit the environment
    of the process that starts them, this one) uses one local Prefect server, started by the first of them
    and stopped at the end; its database is in a temporary PREFECT_HOME, never the developer's."""
    if os.environ.get(_SHARED_STATE):
        return  # an xdist worker, or a caller that chose the folder (and stops its server itself)
    root = tempfile.mkdtemp(prefix="fanout-tests-")
    os.environ[_SHARED_STATE] = os.path.join(root, "cache")
    os.makedirs(os.path.join(root, "prefect-db"))
    os.environ[PREFECT_DB_TEMPLATE] = os.path.join(root, "prefect-db")
    os.environ.setdefault("PREFECT_HOME", os.path.join(root, "prefect-home"))
    config.stash[_owned_state] = root


# The test tiers (CONTRIBUTING.md): a test that needs a Prefect API server or the emulators is marked so, from
# the fixtures it uses (the fixtures they use included) or from its folder, where a folder's tests start them
# themselves (a `fanout run` subprocess, an emulator process of their own); `make unit` runs the rest.
_FIXTURE_MARKS = {
    "prefect_server": "prefect",
    **dict.fromkeys(("emulator", "gcs", "emu", "emulator_process", "cloud_run", "fake_gcs"), "emulator"),
}
_FOLDER_MARKS = {
    "cli": ("prefect", "emulator"),
    "emulator": ("emulator",),
    "flow": ("prefect", "emulator"),
    "packed": ("prefect", "emulator"),
    "prefect": ("prefect", "emulator"),
    "reliability": ("prefect", "emulator"),
    "seed": ("prefect", "emulator"),
}
_TESTS = Path(__file__).parent


def _tier_marks(item: pytest.Item) -> set[str]:
    marks = {_FIXTURE_MARKS[name] for name in getattr(item, "fixturenames", ()) if name in _FIXTURE_MARKS}
    folder = item.path.relative_to(_TESTS).parts[0] if item.path.is_relative_to(_TESTS) else ""
    return marks | set(_FOLDER_MARKS.get(folder, ()))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test gets its tier's marks (above). Then slow tests first, the longest (``slow(minutes=N)``, what
    they take in make test) before the others. make test hands each worker its next test as it finishes one
    (--dist load --maxschedchunk 1), so the long tests spread over every worker from the start and the run ends
    on short ones, instead of on one worker still running a long test after the others are done."""
    for item in items:
        for mark in sorted(_tier_marks(item)):
            item.add_marker(mark)

    def order(item: pytest.Item) -> tuple[bool, float]:
        slow = item.get_closest_marker("slow")
        return slow is None, -float(slow.kwargs.get("minutes", 0)) if slow else 0.0

    items.sort(key=order)


def pytest_unconfigure(config: pytest.Config) -> None:
    root = config.stash.get(_owned_state, None)
    if root is None:
        return
    from controller.prefect_server import stop

    try:
        stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


from cloudrun_emulator import Emulator  # noqa: E402
from controller.catalog import Catalog  # noqa: E402
from controller.clients import Clients, Endpoints  # noqa: E402
from controller.emulator_jobs import catalog_emulator  # noqa: E402

PREFIX = "reliability:"
_collected: list[tuple[str, str, Any]] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """``figures(name, value)`` records one figure of this test and prints it."""
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def record(name: str, value: Any) -> None:
        request.node.user_properties.append((PREFIX + name, value))
        line = f"[reliability] {name}: {value}\n"
        if capman is not None:
            with capman.global_and_fixture_disabled():
                sys.stderr.write(line)
                sys.stderr.flush()
        else:
            sys.stderr.write(line)

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        for name, value in report.user_properties:
            if isinstance(name, str) and name.startswith(PREFIX):
                _collected.append((report.nodeid, name.removeprefix(PREFIX), value))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _collected:
        return
    terminalreporter.section("reliability figures")
    for nodeid, name, value in _collected:
        terminalreporter.write_line(f"{name}: {value}    ({nodeid.rsplit('::', 1)[-1]})")


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The bundled example jobs (jobs/*/job.yaml), as the controller reads them."""
    return Catalog.from_jobs_dir()


@pytest.fixture(scope="session")
def emulator(catalog: Catalog, gcs: Any) -> Iterator[Emulator]:
    """One Cloud Run + Logging emulator serving the catalog's jobs for the whole session. It starts after
    fake-gcs-server so its tasks inherit STORAGE_EMULATOR_HOST (packed tasks read manifests there)."""
    with catalog_emulator(catalog, project=PROJECT, region=REGION, max_running_tasks=64) as emu:
        yield emu


@pytest.fixture(scope="session")
def gcs() -> Iterator[Any]:
    """fake-gcs-server with the report bucket; yields a google-cloud-storage client pointed at it."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # It sets STORAGE_EMULATOR_HOST, which the storage client and the packed runner honour.
    with fake_gcs_server() as server:
        client = storage.Client(
            project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": server.url}
        )
        client.create_bucket(BUCKET)
        yield client


@pytest.fixture
def clients(emulator: Emulator, gcs: Any) -> Clients:
    """The controller's clients: Cloud Run and Logging at the emulator, GCS at fake-gcs-server."""
    url = os.environ["STORAGE_EMULATOR_HOST"]
    return Clients(project=PROJECT, endpoints=Endpoints(cloud_run=emulator.url, logging=emulator.url, storage=url))


def drain_to_the_server() -> None:
    """Send what this process's Prefect still holds for the server (API logs, events) while it runs. Prefect
    sends the rest at exit otherwise, and once the run's server has stopped (pytest_unconfigure, in a run
    without xdist) its client retries that for minutes (PREFECT_CLIENT_MAX_RETRIES above) before the process
    can exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=60)
    EventsWorker.drain_all(timeout=60)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """The test run's one Prefect API server for this worker's flows: the local server `fanout run` uses
    (controller/prefect_server.py, state in the run's FANOUT_CACHE_DIR), started by whichever process needs
    it first, held in use until the worker ends and stopped in pytest_unconfigure. Every xdist worker and
    every ``fanout run`` subprocess shares it; their flows keep their API-call budget in process and each
    worker has a project of its own (tests/testenv.py), so no flow waits on another worker's budget."""
    from prefect import context
    from prefect.settings import PREFECT_API_URL
    from prefect.settings.context import temporary_settings

    from controller.prefect_server import in_use, server_home

    # Started on a copy of the run's migrated database, unless a `fanout run` started it already.
    migrated_prefect_database(server_home() / "prefect.db")
    with in_use() as state, temporary_settings(updates={PREFECT_API_URL: state.api_url}):
        # Threads the flows start read the process's settings, not this context's.
        before, context.GLOBAL_SETTINGS_CONTEXT = context.GLOBAL_SETTINGS_CONTEXT, context.get_settings_context()
        try:
            yield
        finally:
            drain_to_the_server()
            context.GLOBAL_SETTINGS_CONTEXT = before


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium, headless, for the tests that open a page (bench.chromium drives it)."""
    from bench.chromium import find_chromium, launched

    executable = find_chromium()
    if executable is None:
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    with launched(executable, tmp_path_factory.mktemp("chromium-profile")) as started:
        yield started
