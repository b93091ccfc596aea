"""`fanout emulator` (`python -m cloudrun_emulator` is the same code): serves, logs requests, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import grpc
import psutil
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport

from controller.catalog import Catalog, CatalogError
from controller.emulator_jobs import catalog_emulator
from tests.emulator.conftest import FAST_POLL, PY, wait_until

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# A bound for a hung command, not a guess at its time: an emulator process's imports alone took over 60 s on
# a 2-core machine at load 20.
HUNG = 300.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _job_yaml(jobs_dir: Path, pid_file: Path) -> None:
    folder = jobs_dir / "sleeper"
    folder.mkdir(parents=True)
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    (folder / "job.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: sleeper
            description: sleeps until killed
            image: sleeper:1
            timeout: 120s
            max_retries: 0
            local:
              entrypoint: [{json.dumps(PY)}, "-c", {json.dumps(code)}]
            """
        )
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_logs_requests_and_exits_cleanly_with_tasks_gone(tmp_path: Path, sig: signal.Signals) -> None:
    pid_file = tmp_path / "task.pid"
    _job_yaml(tmp_path / "jobs", pid_file)
    port, grpc_port, tls_port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ports = ["--port", str(port), "--grpc-port", str(grpc_port), "--grpc-tls-port", str(tls_port)]
    command = ["emulator", *ports, "--jobs-dir", str(tmp_path / "jobs")]
    proc = subprocess.Popen(
        [PY, "-m", "controller.cli", *command, "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        jobs = run_v2.JobsClient(
            credentials=AnonymousCredentials(), transport="rest", client_options=ClientOptions(api_endpoint=url)
        )
        name = "projects/local-project/locations/us-central1/jobs/sleeper"

        def serving() -> bool:
            try:
                jobs.get_job(name=name)
            except Exception:
                return False
            return True

        wait_until(serving, timeout=HUNG, what="the emulator to serve")
        over_grpc = run_v2.JobsClient(
            transport=JobsGrpcTransport(channel=grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        )
        assert over_grpc.get_job(name=name).name == name
        jobs.run_job(name=name)
        wait_until(pid_file.exists, what="the task to start")
        wait_until(lambda: pid_file.read_text().isdigit(), what="the task pid")
        task_pid = int(pid_file.read_text())
        assert psutil.pid_exists(task_pid)

        proc.send_signal(sig)
        out, err = proc.communicate(timeout=HUNG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"serving {url} (REST) and 127.0.0.1:{grpc_port} (gRPC, plaintext)" in out
    assert "api_endpoint" in out
    assert f"grpc.insecure_channel('127.0.0.1:{grpc_port}')" in out
    assert f"gRPC with TLS at 127.0.0.1:{tls_port}" in out
    assert "export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=" in out
    assert "stopped" in out
    assert "POST /v2/projects/local-project/locations/us-central1/jobs/sleeper:run -> 200 Jobs.RunJob" in err
    assert "gRPC /google.cloud.run.v2.Jobs/GetJob -> OK" in err
    deadline = time.monotonic() + 5
    while psutil.pid_exists(task_pid) and psutil.Process(task_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the task process outlived the emulator"
        time.sleep(0.05)


def test_cli_rejects_a_bad_faults_file(tmp_path: Path) -> None:
    bad = tmp_path / "faults.yaml"
    bad.write_text("task_kill_rate: 5\n")
    result = subprocess.run(
        [PY, "-m", "cloudrun_emulator", "--port", "0", "--faults", str(bad), "--jobs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=HUNG,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert result.returncode == 2
    assert "task_kill_rate" in result.stderr
    assert "Traceback" not in result.stderr


def test_repository_catalog_job_runs_through_its_local_entrypoint() -> None:
    try:
        catalog = Catalog.from_jobs_dir()
    except CatalogError as exc:
        pytest.skip(f"no usable job catalog in the repository: {exc}")
    if "hello" not in catalog:
        pytest.skip("the repository has no hello job")
    with catalog_emulator(catalog) as emulator:
        jobs = run_v2.JobsClient(
            credentials=AnonymousCredentials(),
            transport="rest",
            client_options=ClientOptions(api_endpoint=emulator.url),
        )
        name = f"projects/{emulator.project}/locations/{emulator.region}/jobs/hello"
        execution = jobs.run_job(name=name).result(timeout=60, polling=FAST_POLL)
        assert execution.succeeded_count == 1


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=HUNG, env=ENV, check=False)


def test_every_option_has_help_that_states_its_default() -> None:
    from cloudrun_emulator.__main__ import build_parser

    options = [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 12
    missing = [a.option_strings[-1] for a in options if not a.help or "(default: " not in a.help]
    assert missing == []


@pytest.mark.slow
def test_fanout_emulator_is_python_m_cloudrun_emulator() -> None:
    fanout = str(Path(PY).with_name("fanout"))
    module = _run(PY, "-m", "cloudrun_emulator", "--help")
    wrapped = _run(fanout, "emulator", "--help")
    assert (module.returncode, wrapped.returncode) == (0, 0)
    assert "examples:" in module.stdout
    assert "(default: 8123)" in module.stdout
    # The same text after the usage lines (which wrap differently for the two program names).
    body = wrapped.stdout.split("\n\n", 1)[1].replace("fanout emulator", "python -m cloudrun_emulator")
    assert body == module.stdout.split("\n\n", 1)[1]
    for command in ([PY, "-m", "cloudrun_emulator"], [fanout, "emulator"]):
        bad = _run(*command, "--port", "99999")
        assert bad.returncode == 2
        assert "--port: must be between 0 and 65535, got 99999" in bad.stderr
        assert "Traceback" not in bad.stderr
