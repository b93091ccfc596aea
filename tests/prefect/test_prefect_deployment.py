"""prefect.yaml end to end, the way teams run it: a real Prefect server (on SQLite: the local server
``fanout`` starts, here the test run's; on PostgreSQL: ``prefect server start``), a process work pool and
worker, ``prefect deploy`` from this repository's prefect.yaml and ``prefect deployment run --param ...``; the
flow runs in the worker's subprocess against the Cloud Run emulator (its own process) and fake-gcs-server.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefectsupport import (
    PREFECT,
    Proc,
    emulator_process,
    isolated_env,
    noisy_lines,
    postgres_bin,
    postgres_cluster,
    prefect_server,
    run_cli,
    wait_for,
)
from testenv import PROJECT, report_document

pytestmark = pytest.mark.slow

E2E_BUCKET = "fanout-e2e"
POOL = "fanout-local"  # the pool prefect.yaml names, so the deployment is used as written
DEPLOYMENT = "fan-out/fan-out-batch"
RUN_DEADLINE = 120.0
# A worker's shutdown on Ctrl-C: it cancels its loops, sends its "stopped" event and closes its client (a few
# API calls), then prints "stopped!". Past this it is killed, and the test fails saying so.
WORKER_STOP = 60.0


@pytest.fixture(scope="module")
def emulator_url(gcs: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The emulator as a separate process; it passes STORAGE_EMULATOR_HOST on to the tasks it runs, so a
    packed task reads its manifest from fake-gcs-server."""
    workdir = tmp_path_factory.mktemp("emulator")
    with emulator_process(workdir, PROJECT, isolated_env(workdir)) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, Proc | None]]:
    """A Prefect server on a database of the given kind: (database kind, API URL, ``prefect server start``
    process). SQLite: the local server of the test run (tests/conftest.py), the one ``fanout`` starts for its
    users (a server start is ~25 s of CPU); PostgreSQL: ``prefect server start`` on a fresh cluster."""
    kind: str = request.param
    if kind == "sqlite":
        from prefect.settings import PREFECT_API_URL

        request.getfixturevalue("prefect_server")
        yield kind, str(PREFECT_API_URL.value()), None
        return
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(postgres_cluster(bindir))
        url, proc = stack.enter_context(prefect_server(tmp_path, database_url))
        yield kind, url, proc
    # Stopped by now (SIGINT, as Ctrl-C): the shutdown is quiet too.
    assert noisy_lines(proc.log()) == [], proc.log()[-5000:]


def _wait_final(api_url: str, flow_run_id: UUID) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    deadline = time.monotonic() + RUN_DEADLINE
    with SyncPrefectClient(api=api_url) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {flow_run_id} still {flow_run.state} after {RUN_DEADLINE:.0f}s")
            time.sleep(0.5)


def _artifacts(api_url: str, flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with SyncPrefectClient(api=api_url) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in found if artifact.key}


def test_deployment_run_through_a_worker(
    server: tuple[str, str, Proc | None], emulator_url: str, gcs: Any, tmp_path: Path
) -> None:
    kind, api_url, server_proc = server
    started = time.monotonic()
    if gcs.lookup_bucket(E2E_BUCKET) is None:
        gcs.create_bucket(E2E_BUCKET)
    storage_url = os.environ["STORAGE_EMULATOR_HOST"]  # the session's fake-gcs-server (the gcs fixture)
    cli_env = isolated_env(tmp_path / "cli-home", api_url)

    marks: dict[str, float] = {}

    def mark(step: str) -> None:
        marks[step] = time.monotonic() - started

    run_cli(["work-pool", "create", POOL, "--type", "process"], cli_env)
    mark("pool")
    worker_env = isolated_env(
        tmp_path / "worker-home",
        api_url,
        FANOUT_EMULATOR_HOST=emulator_url,
        STORAGE_EMULATOR_HOST=storage_url,
        # Poll for scheduled runs every second instead of every 10 s.
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
    )
    # The worker starts before the deployment exists (its startup overlaps `prefect deploy`), from a folder
    # that is not the checkout, so only prefect.yaml's pull step can bring the flow code to it.
    worker_dir = tmp_path / "worker-cwd"
    worker_dir.mkdir()
    worker = Proc(
        "worker",
        [PREFECT, "worker", "start", "--pool", POOL, "--name", f"e2e-{kind}"],
        tmp_path / "worker.log",
        worker_env,
        cwd=worker_dir,
    ).start()
    try:
        # From the repository root, as a user deploys: prefect.yaml's build step records this checkout for
        # the pull step.
        deployed = run_cli(["deploy", "--name", "fan-out-batch", "--no-prompt"], cli_env)
        assert "fan-out/fan-out-batch" in deployed, deployed
        mark("deploy")
        batch_id = f"e2e-{kind}"
        params = {
            "batch": "examples/hello.yaml",
            "report_to": f"gs://{E2E_BUCKET}/reports-{kind}",
            "project": PROJECT,
            "batch_id": batch_id,
            "concurrency": 4,
            "poll_interval": 0.5,
        }
        args = ["deployment", "run", DEPLOYMENT]
        for name, value in params.items():
            # The CLI reads each value as JSON when it parses (4, 0.5) and as a string otherwise.
            args += ["--param", f"{name}={value}"]
        output = run_cli(args, cli_env)
        match = re.search(r"UUID: ([0-9a-f-]{36})", output)
        assert match, output
        mark("run")
        flow_run = _wait_final(api_url, UUID(match.group(1)))
        mark("completed")
        assert flow_run.state.is_completed(), f"{flow_run.state}\n{worker.log()[-5000:]}"
        # The run is final in the API before its process has flushed its logs and exited, and the worker
        # waits for that process when it stops: stop it once it has nothing in flight, so what its stop
        # takes is its own shutdown.
        wait_for(lambda: not worker.children(), RUN_DEADLINE, "the flow run's process to exit")
        mark("flow process exited")
    finally:
        worker.stop(grace=WORKER_STOP)

    # The parameters the run got are those passed on the command line, over prefect.yaml's defaults.
    assert flow_run.parameters["batch"] == "examples/hello.yaml"
    assert flow_run.parameters["report_to"] == f"gs://{E2E_BUCKET}/reports-{kind}"
    assert flow_run.parameters["concurrency"] == 4
    assert flow_run.parameters["poll_interval"] == 0.5
    assert flow_run.parameters["logs_for"] == "failed"  # a prefect.yaml default nobody overrode
    assert flow_run.deployment_id is not None

    # The report is in the bucket, with every item of examples/hello.yaml succeeded.
    report = report_document(f"gs://{E2E_BUCKET}/reports-{kind}/{batch_id}", gcs)
    assert report["batch_id"] == batch_id
    assert report["flow_run_id"] == str(flow_run.id)
    assert len(report["items"]) == 25
    assert {item["state"] for item in report["items"]} == {"succeeded"}
    assert gcs.bucket(E2E_BUCKET).blob(f"reports-{kind}/{batch_id}/report.html").exists()

    # The Prefect artifacts are on the flow run.
    artifacts = _artifacts(api_url, flow_run.id)
    assert {"fanout-report", "fanout-failed-items"} <= set(artifacts), sorted(artifacts)
    assert batch_id in str(artifacts["fanout-report"].data)
    assert f"gs://{E2E_BUCKET}/reports-{kind}/{batch_id}/report.json" in str(artifacts["fanout-report"].data)

    # prefect.yaml turns on result persistence (JSON): the run's summary can be read back through the API.
    summary = flow_run.state.result()
    assert summary["batch_id"] == batch_id
    assert summary["succeeded"] == 25

    # Quiet offline: no telemetry errors, no tracebacks, and the worker stopped cleanly on Ctrl-C.
    worker_log = worker.log()
    how = f"killed after {WORKER_STOP:.0f}s" if worker.killed else f"exited {worker.stopped_after:.1f}s after SIGINT"
    # Killed: the log ends with the fault handler's stacks of every thread, which say where it waited.
    assert "stopped!" in worker_log, f"{how}\n{worker_log[-(20000 if worker.killed else 3000) :]}"
    assert noisy_lines(worker_log) == [], worker_log[-5000:]
    if server_proc is not None:  # the shared local server's log has every test's requests in it
        assert noisy_lines(server_proc.log()) == [], server_proc.log()[-5000:]  # and again after it stops
    mark("checked")
    steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in marks.items())
    print(f"{kind}: {steps}; the worker stopped {worker.stopped_after:.1f}s after SIGINT")
