"""``fanout run`` through the warm host (controller/warm.py), as a user runs it: the ``fanout`` console script
in its own process, its exit code, what it prints, the report it writes, a signal sent to it.

Each test module's commands share a state dir of their own (``FANOUT_CACHE_DIR``), so the warm host under
test is theirs; Prefect is the session's local server, named by ``PREFECT_API_URL`` (the no-server path,
where the command finds that server itself, has its own test). Which process ran a command is read from
the host's log, where it names the pid of every command it took.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testenv import report_document

from controller import prefect_server, warm
from tests.reliability.harness import FANOUT, REPO, CloudRunView, EmulatorProcess, mixed_spec, wait_for

pytestmark = pytest.mark.slow

RUN_TIMEOUT = prefect_server.start_timeout() + 240.0
HOST_READY = 600.0  # the host's imports: 3-15 s here, minutes when the machine is very busy


def _write_spec(folder: Path, batch_id: str, items: list[dict[str, Any]]) -> Path:
    path = folder / f"{batch_id}.json"
    path.write_text(json.dumps({"batch_id": batch_id, "items": items}))
    return path


def _popen(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FANOUT, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _run(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """The command's result and its pid."""
    proc = _popen(args, env)
    out, err = proc.communicate(timeout=RUN_TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


class Host:
    """The warm host of one state dir, seen from outside: its socket and its log."""

    def __init__(self, cache: Path) -> None:
        self.directory = cache / "prefect-server"
        self.log = self.directory / "warm.log"

    def socket(self) -> Path:
        return warm.socket_path(self.directory, warm.code_digest())

    def lines(self) -> list[str]:
        try:
            return self.log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def served(self, pid: int) -> bool:
        return any(f"took the command of pid {pid} " in line for line in self.lines())

    def wait_ready(self) -> None:
        wait_for(self.socket().exists, HOST_READY, 0.2, f"the warm host's socket ({self.log})")


@pytest.fixture(scope="module")
def api_url() -> str:
    """The session's local Prefect server (started if no test started it yet)."""
    state, _started = prefect_server.ensure()
    return state.api_url


@contextlib.contextmanager
def _command_env(cache: Path, api_url: str) -> Iterator[dict[str, str]]:
    """A command environment with a state dir of its own, whose warm hosts are stopped at the end."""
    environ = {**os.environ, "FANOUT_CACHE_DIR": str(cache), "PREFECT_API_URL": api_url, "PYTHONUNBUFFERED": "1"}
    environ.pop("FANOUT_WARM", None)
    try:
        yield environ
    finally:
        subprocess.run([FANOUT, "server", "stop"], env=environ, capture_output=True, timeout=120, check=False)


@pytest.fixture
def env(api_url: str) -> Iterator[dict[str, str]]:
    """A state dir with a short path, so that a test can bind a socket in it (pytest's tmp_path is too long
    for a socket address; the host itself copes, see the host_env tests)."""
    folder = Path(tempfile.mkdtemp(prefix="fanout-warm-"))
    try:
        with _command_env(folder / "c", api_url) as environ:
            yield environ
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def host_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """For a host that runs no command: no Prefect API needed."""
    with _command_env(tmp_path / "c", "http://127.0.0.1:9/api") as environ:
        yield environ


@pytest.fixture(scope="module")
def warm_env(tmp_path_factory: pytest.TempPathFactory, api_url: str) -> Iterator[dict[str, str]]:
    """An environment whose warm host runs: started the way users get one, by a first command (which runs
    in its own process)."""
    folder = tmp_path_factory.mktemp("warm")
    with _command_env(folder / "c", api_url) as environ:
        host = Host(folder / "c")
        spec = _write_spec(folder, "first", [{"job": "hello", "args": ["first"]}])
        result, pid = _run(["run", str(spec), "--report-to", str(folder / "reports"), "--quiet"], environ)
        assert result.returncode == 0, result.stderr
        host.wait_ready()
        assert not host.served(pid)
        yield environ


def _spawned_host(env: dict[str, str]) -> tuple[Host, subprocess.Popen[bytes]]:
    """A warm host started directly (``python -m controller.warm serve`` in the state dir), once it listens."""
    host = Host(Path(env["FANOUT_CACHE_DIR"]))
    host.directory.mkdir(parents=True, exist_ok=True)
    with host.log.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.warm", "serve"],
            cwd=host.directory,
            env=env,
            stdout=log,
            start_new_session=True,
        )
    wait_for(lambda: host.socket().exists() or proc.poll() is not None, HOST_READY, 0.2, "the warm host")
    assert proc.poll() is None, host.lines()
    return host, proc


def _summary(report_dir: Path, batch_id: str) -> dict[str, Any]:
    report = report_document(report_dir / batch_id)
    items = {item["key"]: (item["state"], item["exit_code"]) for item in report["items"]}
    counts = {name: report["summary"][name] for name in ("total", "by_state", "launches")}
    return {"status": report["status"], "summary": counts, "items": items}


def test_a_run_through_the_warm_host_is_the_run_in_process(warm_env: dict[str, str], tmp_path: Path) -> None:
    env, host = warm_env, Host(Path(warm_env["FANOUT_CACHE_DIR"]))
    items = [{"job": "hello", "args": ["Ada"]}, {"job": "hello", "args": ["--sleep", "-1"]}]  # the second fails
    results = {}
    for label, extra in (("warm", {}), ("in-process", {"FANOUT_WARM": "0"})):
        spec = _write_spec(tmp_path, f"same-{label}", items)
        reports = tmp_path / f"reports-{label}"
        result, pid = _run(["run", str(spec), "--report-to", str(reports), "--mode", "per-item"], {**env, **extra})
        assert host.served(pid) == (label == "warm"), host.lines()
        assert "Traceback" not in result.stderr, result.stderr
        results[label] = (result, _summary(reports, f"same-{label}"))
    (warm_run, warm_report), (local_run, local_report) = results["warm"], results["in-process"]
    flow_run = _flow_run(env["PREFECT_API_URL"], tmp_path / "reports-warm" / "same-warm")
    assert flow_run["state_type"] == "FAILED"  # an item failed: so did the flow run, as in-process
    assert flow_run["parameters"]["batch_id"] == "same-warm"
    assert warm_run.returncode == local_run.returncode == 1
    assert warm_report == local_report
    assert warm_report["items"]["item-00001"] == ("failed", 2)
    # What the command printed arrives, on the stream it was printed on.
    for result, label in ((warm_run, "warm"), (local_run, "in-process")):
        assert f"report: {tmp_path / f'reports-{label}' / f'same-{label}' / 'report.json'}" in result.stdout
        assert "1 of 2 items did not succeed" in result.stdout
        assert "1 failed" in result.stderr  # the progress display


def test_a_rerun_goes_through_the_warm_host_too(warm_env: dict[str, str], tmp_path: Path) -> None:
    """`fanout rerun` starts a batch as `fanout run` does: the warm host takes it (no Prefect import of its
    own), with the same output."""
    env, host = warm_env, Host(Path(warm_env["FANOUT_CACHE_DIR"]))
    items = [{"job": "hello", "args": ["Ada"]}, {"job": "hello", "args": ["--sleep", "-1"]}]  # the second fails
    spec = _write_spec(tmp_path, "to-rerun", items)
    reports = tmp_path / "reports"
    first, _ = _run(["run", str(spec), "--report-to", str(reports), "--quiet"], env)
    assert first.returncode == 1, first.stderr[-3000:]
    again, pid = _run(["rerun", str(reports / "to-rerun"), "--quiet"], env)
    assert host.served(pid), host.lines()
    assert again.returncode == 1, again.stderr[-3000:]
    assert f"report: {reports / 'to-rerun-rerun-1' / 'report.json'}" in again.stdout
    assert "Traceback" not in again.stderr and "telemetry" not in again.stderr.lower()


def _flow_run(api_url: str, report_dir: Path) -> dict[str, Any]:
    """The batch's flow run, as the Prefect API shows it."""
    report = json.loads((report_dir / "report.json").read_text())
    with urllib.request.urlopen(f"{api_url}/flow_runs/{report['flow_run_id']}", timeout=30) as answer:
        flow_run: dict[str, Any] = json.load(answer)
    return flow_run


def test_with_no_prefect_api_configured_the_warm_run_finds_the_local_server(tmp_path: Path) -> None:
    """The default: the command's process in the host starts or finds the local Prefect server itself (the
    session's state dir, whose host other tests' commands may use too; the session's end stops it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "FANOUT_WARM")}
    host = Host(Path(env["FANOUT_CACHE_DIR"]))
    if not host.socket().exists():
        host.directory.mkdir(parents=True, exist_ok=True)
        with host.log.open("ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "controller.warm", "serve"], cwd=host.directory, env=env, stdout=log
            )
        host.wait_ready()
    spec = _write_spec(tmp_path, "no-api", [{"job": "hello", "args": ["Ada"]}])
    result, pid = _run(["run", str(spec), "--report-to", str(tmp_path / "reports"), "--quiet"], env)
    assert host.served(pid)
    assert result.returncode == 0, result.stderr
    state = prefect_server.read_state()
    assert state is not None
    flow_run = _flow_run(state.api_url, tmp_path / "reports" / "no-api")
    assert flow_run["state_type"] == "COMPLETED"
    assert flow_run["parameters"]["batch_id"] == "no-api"


def test_invalid_input_through_the_warm_host_exits_2_with_its_message(warm_env: dict[str, str], tmp_path: Path) -> None:
    env, host = warm_env, Host(Path(warm_env["FANOUT_CACHE_DIR"]))
    spec = _write_spec(tmp_path, "bad", [{"job": "no-such-job"}])
    result, pid = _run(["run", str(spec), "--report-to", str(tmp_path / "reports")], env)
    assert host.served(pid)
    assert result.returncode == 2
    assert "no-such-job" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(tmp_path / "emulator").start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_command_cancels_the_batch_in_the_warm_host(
    sig: signal.Signals, warm_env: dict[str, str], tmp_path: Path, emulator_process: EmulatorProcess
) -> None:
    env, host = warm_env, Host(Path(warm_env["FANOUT_CACHE_DIR"]))
    cloud_run = CloudRunView(emulator_process.url)
    batch_id = f"warm-{sig.name.lower()}"
    trial = mixed_spec(
        random.Random(5), batch_id, hello=3, flaky=0, multi_task=1, one_off=0, min_sleep=60, max_sleep=61
    )
    spec = trial.write(tmp_path)
    reports = tmp_path / "reports"
    proc = _popen(["run", str(spec), "--emulator", emulator_process.url, "--report-to", str(reports), "--quiet"], env)
    wait_for(lambda: host.served(proc.pid), RUN_TIMEOUT, 0.2, "the warm host taking the command")
    wait_for(lambda: len([e for e in cloud_run.running(batch_id) if e.running]) >= 2, RUN_TIMEOUT, 0.3, "tasks")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert not cloud_run.running(batch_id)
    report = report_document(reports / batch_id)
    assert report["status"] == "cancelled"
    assert {item["state"] for item in report["items"]} <= {"cancelled", "not_launched"}
    assert f"report: {reports / batch_id / 'report.json'}" in out


def _serve_once(path: Path, answer: bytes | None) -> threading.Thread:
    """A broken host at ``path``: takes one connection, answers ``answer`` (or nothing) and hangs up."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, as a host makes it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                _data, fds, _flags, _addr = socket.recv_fds(conn, 1024, 3)
                for fd in fds:
                    os.close(fd)
                if answer is not None:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "answer", [None, b'{"refused": "other code"}\n', b"garbage\n"], ids=["hangs-up", "refuses", "garbage"]
)
def test_a_broken_warm_host_means_a_run_in_process(env: dict[str, str], tmp_path: Path, answer: bytes | None) -> None:
    host = Host(Path(env["FANOUT_CACHE_DIR"]))
    thread = _serve_once(host.socket(), answer)
    spec = _write_spec(tmp_path, "fallback", [{"job": "hello", "args": ["Grace"]}])
    result, _pid = _run(["run", str(spec), "--report-to", str(tmp_path / "reports"), "--quiet"], env)
    thread.join(10)
    assert not thread.is_alive()  # the command did reach the broken host
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert _summary(tmp_path / "reports", "fallback")["status"] == "succeeded"


def test_a_dead_warm_hosts_socket_means_a_run_in_process_and_a_new_host(env: dict[str, str], tmp_path: Path) -> None:
    host = Host(Path(env["FANOUT_CACHE_DIR"]))
    host.directory.mkdir(mode=0o700, parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(host.socket()))  # a socket file nobody listens on any more
    spec = _write_spec(tmp_path, "dead", [{"job": "hello", "args": ["Grace"]}])
    result, _pid = _run(["run", str(spec), "--report-to", str(tmp_path / "reports"), "--quiet"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    wait_for(lambda: any("hosting `fanout run`" in line for line in host.lines()), HOST_READY, 0.2, "a new host")


def test_the_warm_host_stops_with_the_server(host_env: dict[str, str]) -> None:
    host, proc = _spawned_host(host_env)
    stopped = subprocess.run(
        [FANOUT, "server", "stop"], env=host_env, capture_output=True, text=True, timeout=120, check=False
    )
    assert stopped.returncode == 0, stopped.stderr
    assert proc.wait(timeout=10) == 0  # gone when `fanout server stop` returns
    assert not host.socket().exists()


def test_an_idle_warm_host_stops_by_itself(host_env: dict[str, str]) -> None:
    host, proc = _spawned_host({**host_env, "FANOUT_SERVER_IDLE_MINUTES": "0.05"})
    assert proc.wait(timeout=120) == 0
    assert not host.socket().exists()
    assert any("idle for 0.05 min: stopping" in line for line in host.lines())


def test_fanout_warm_0_runs_in_process_and_starts_no_host(env: dict[str, str], tmp_path: Path) -> None:
    host = Host(Path(env["FANOUT_CACHE_DIR"]))
    spec = _write_spec(tmp_path, "off", [{"job": "hello"}])
    result, _pid = _run(
        ["run", str(spec), "--report-to", str(tmp_path / "reports"), "--quiet"], {**env, "FANOUT_WARM": "0"}
    )
    assert result.returncode == 0, result.stderr
    assert not host.log.exists()
    bad, _pid = _run(["run", str(spec)], {**env, "FANOUT_WARM": "maybe"})
    assert bad.returncode == 2
    assert "FANOUT_WARM" in bad.stderr
    assert "Traceback" not in bad.stderr


class _Impostor:
    """A listener at a warm host's socket that is not this user's host: it takes a command the way a host does,
    keeps what it was sent, prints a made-up success and answers exit 0 without running anything."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.received = b""
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            self.connected.set()
            with conn:
                conn.settimeout(30)
                _data, fds, _flags, _addr = socket.recv_fds(conn, 1, 3)
                reader = conn.makefile("rb")
                self.received = reader.readline()
                conn.sendall(b'{"pid": 1}\n')
                if reader.readline().strip() == b"go":
                    for fd in fds[1:2]:
                        os.write(fd, b"Batch: succeeded - all items succeeded\n")
                    conn.sendall(b"exit 0\n")
                for fd in fds:
                    os.close(fd)

    def close(self) -> None:
        self.listener.close()


def test_a_socket_in_a_folder_others_can_write_to_is_not_handed_the_command(
    env: dict[str, str], tmp_path: Path
) -> None:
    host = Host(Path(env["FANOUT_CACHE_DIR"]))
    host.directory.mkdir(parents=True)
    os.chmod(host.directory, 0o777)  # a shared cache folder: anyone may put a socket of that name there
    impostor = _Impostor(host.socket())
    canary = "canary-warm-env-0123456789"
    spec = _write_spec(tmp_path, "impostor", [{"job": "hello", "args": ["Grace"]}])
    try:
        result, _pid = _run(
            ["run", str(spec), "--report-to", str(tmp_path / "reports"), "--quiet"], {**env, "SOME_TOKEN": canary}
        )
    finally:
        impostor.close()
    assert result.returncode == 0, result.stderr
    assert _summary(tmp_path / "reports", "impostor")["status"] == "succeeded"  # it ran, in its own process
    assert not impostor.connected.is_set() and canary.encode() not in impostor.received
    # The host started for the next command made the folder private first (and replaced the socket).
    wait_for(lambda: any("hosting `fanout run`" in line for line in host.lines()), HOST_READY, 0.2, "a new host")
    assert host.directory.stat().st_mode & 0o777 == 0o700


LISTEN_AS_NOBODY = """
import os, socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])  # as root, so the file is this user's: only the listener's credentials tell
os.setuid(65534)
listener.listen(1)  # SO_PEERCRED reports the credentials of the process that called listen()
print("listening", flush=True)
listener.settimeout(float(sys.argv[2]))
try:
    conn, _ = listener.accept()
except TimeoutError:
    print("no connection", flush=True)
    sys.exit(0)
conn.settimeout(10)
data = b""
try:
    while chunk := conn.recv(65536):
        data += chunk
except OSError:
    pass
print(f"received {len(data)} bytes", flush=True)
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to listen as another user")
def test_a_listener_of_another_user_is_not_handed_the_command(env: dict[str, str], tmp_path: Path) -> None:
    host = Host(Path(env["FANOUT_CACHE_DIR"]))
    host.directory.mkdir(mode=0o700, parents=True)
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTEN_AS_NOBODY, str(host.socket()), "120"], stdout=subprocess.PIPE, text=True
    )
    assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
    spec = _write_spec(tmp_path, "nobody", [{"job": "hello", "args": ["Grace"]}])
    result, _pid = _run(["run", str(spec), "--report-to", str(tmp_path / "reports"), "--quiet"], env)
    assert result.returncode == 0, result.stderr
    assert _summary(tmp_path / "reports", "nobody")["status"] == "succeeded"
    listener.kill()
    out, _err = listener.communicate(timeout=30)
    assert "received" not in out or "received 0 bytes" in out, out  # connected, checked, hung up: nothing sent
