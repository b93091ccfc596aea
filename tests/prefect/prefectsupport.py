"""Real processes for the Prefect tests: a Prefect server (SQLite or a throwaway PostgreSQL cluster), the
Cloud Run emulator, a worker, the ``prefect`` CLI; and a local OAuth token endpoint for service-account
credentials. Every wait has a deadline, and every process runs in its own process group so teardown can
stop it and whatever it spawned.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PREFECT = str(VENV_BIN / "prefect")

# Environment variables of the test process that must not leak into the processes under test: they would
# point them at the session's in-process test server or the developer's own profile.
_PREFECT_ISOLATION = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_HOME", "PREFECT_PROFILES_PATH", "PREFECT_PROFILE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except Exception as exc:  # not up yet: connection refused, 503, ...
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last error: {last!r})")


def isolated_env(prefect_home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a process under test: this one's, minus the Prefect profile, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _PREFECT_ISOLATION}
    env.update(
        PREFECT_HOME=str(prefect_home),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Wide, unwrapped CLI output, so ids printed by the CLI are on one line.
        PREFECT_CLI_WRAP_LINES="false",
        COLUMNS="200",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


@dataclass
class Proc:
    """A background process with its output in a file, stopped with its whole process group."""

    name: str
    args: list[str]
    log_path: Path
    env: Mapping[str, str]
    cwd: Path = REPO
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    # How the last stop went: seconds from SIGINT to exit, and whether it had to be killed.
    stopped_after: float | None = field(default=None, init=False)
    killed: bool = field(default=False, init=False)

    def start(self) -> Proc:
        log = self.log_path.open("wb")
        # Python's fault handler on: a process that outlives its grace gets SIGABRT first (see ``stop``), and
        # its log ends with where each of its threads was waiting.
        env = {**self.env, "PYTHONFAULTHANDLER": "1"}
        # SIGINT (``stop``) reaches it even when the suite was started with SIGINT ignored: tests/conftest.py.
        self.popen = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd, start_new_session=True
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def children(self) -> list[int]:
        """Pids of this process's live children (a worker's flow-run processes), from /proc."""
        if self.popen is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
                state, ppid = stat.read_text().rpartition(")")[2].split()[:2]
            except (OSError, ValueError):
                continue  # gone meanwhile
            if int(ppid) == self.popen.pid and state != "Z":
                found.append(int(stat.parent.name))
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGINT (what Ctrl-C sends, so the process shuts down cleanly), then, after ``grace``, SIGABRT (the
        fault handler writes every thread's stack to the log) and SIGKILL."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            asked = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGABRT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=10)  # the fault handler's dump, then the abort
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
            self.stopped_after = time.monotonic() - asked
        # Children that outlived their parent (a flow run subprocess, a task) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.returncode


# A `prefect` command's own work here is a handful of API calls, but its exit waits for Prefect's log and event
# workers to flush to the server: under load (two CPUs, two test workers, their task processes) `prefect
# deploy` printed its last line and then took over 90 s to exit. The bound is for a hung command.
CLI_TIMEOUT = 300.0


def run_cli(args: list[str], env: Mapping[str, str], timeout: float = CLI_TIMEOUT, cwd: Path = REPO) -> str:
    """Run a ``prefect`` CLI command to completion; its output, or a failure that shows it."""
    proc = subprocess.run(
        [PREFECT, *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"prefect {' '.join(args)} exited {proc.returncode}:\n{output}")
    return output


def health(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
        return bool(json.load(response))


@contextlib.contextmanager
def prefect_server(workdir: Path, database_url: str, timeout: float | None = None) -> Iterator[tuple[str, Proc]]:
    """``prefect server start`` on a free port with its own PREFECT_HOME and database; yields its API URL.

    ``timeout`` defaults to the session's Prefect server start deadline (tests/conftest.py).
    """
    if timeout is None:
        timeout = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home = workdir / "server-home"
    home.mkdir(parents=True, exist_ok=True)
    env = isolated_env(
        home,
        PREFECT_API_DATABASE_CONNECTION_URL=database_url,
        # The tests read the API only; without the UI the server skips preparing its static files.
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    server = Proc(
        "prefect-server",
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        workdir / "server.log",
        env,
    ).start()
    try:

        def up() -> bool:
            if not server.alive():
                raise AssertionError(f"prefect server exited:\n{server.log()[-3000:]}")
            return health(api_url)

        try:
            wait_for(up, timeout, "prefect server", interval=0.3)
        except AssertionError:
            raise
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{server.log()[-3000:]}") from None
        yield api_url, server
    finally:
        server.stop()


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL binaries (apt-get install postgresql), newest version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _run(cmd: list[str], timeout: float) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def postgres_cluster(bindir: Path, timeout: float = 60.0) -> Iterator[str]:
    """A throwaway PostgreSQL cluster in a temp dir on a free port; yields an asyncpg connection URL.

    PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the ``postgres`` OS user
    that Debian's package creates.
    """
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="fanout-pg-"))
    if as_postgres:
        shutil.chown(root, user="postgres")
    data = root / "data"
    port = free_port()
    try:
        _run(
            [
                *as_postgres,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            timeout,
        )
        # A test database: no fsync, socket in the temp dir (not /var/run/postgresql), TCP on localhost only.
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off"
        )
        _run(
            [
                *as_postgres,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "postgres.log"),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                options,
                "start",
            ],
            timeout,
        )
        _run(
            [*as_postgres, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "prefect"],
            timeout,
        )
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    except subprocess.CalledProcessError as exc:
        log = (root / "postgres.log").read_text(errors="replace") if (root / "postgres.log").exists() else ""
        raise AssertionError(f"{exc.cmd} failed: {exc.stdout}{exc.stderr}\n{log}") from None
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def emulator_process(workdir: Path, project: str, env: Mapping[str, str]) -> Iterator[str]:
    """``python -m cloudrun_emulator`` as its own process, as a user runs it; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Free gRPC ports: their default, --port + 1 and + 2, may be another process's.
    grpc_ports = ["--grpc-port", "0", "--grpc-tls-port", "0"]
    emu = Proc(
        "emulator",
        [sys.executable, "-m", "cloudrun_emulator", "--port", str(port), *grpc_ports, "--project", project],
        workdir / "emulator.log",
        env,
    ).start()
    try:

        def listening() -> bool:
            if not emu.alive():
                raise AssertionError(f"emulator exited:\n{emu.log()}")
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_for(listening, 30, "Cloud Run emulator")
        yield url
    finally:
        emu.stop()


NOISE = ("Traceback", "telemetry", "Telemetry", "analytics", "| ERROR", "| CRITICAL", "Exception in thread")

# Prefect's own errors that are not the product's, each with why it is tolerated. Prefect 3.9's worker heartbeat
# reads the work pool, then writes the worker row, in one deferred SQLite transaction: when another connection
# commits in between (flow-run logs, events), SQLite answers SQLITE_BUSY_SNAPSHOT at once, whatever the busy
# timeout. It happens more often on a loaded machine; the next heartbeat succeeds and no run is affected.
KNOWN_PREFECT_ERRORS = ("Worker channel heartbeat persistence failed",)
_RECORD_START = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| ")


def noisy_lines(text: str) -> list[str]:
    """Lines of a captured log that an offline run must not print: tracebacks, telemetry, errors.

    A log record (its first line and the traceback under it) that is one of ``KNOWN_PREFECT_ERRORS`` is left out.
    """
    noisy: list[str] = []
    known = False
    for line in text.splitlines():
        if _RECORD_START.match(line):
            known = any(error in line for error in KNOWN_PREFECT_ERRORS)
        if not known and any(word in line for word in NOISE):
            noisy.append(line)
    return noisy


# --- service-account credentials that work offline -------------------------------------------------------


GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


@dataclass
class TokenEndpoint:
    """A local stand-in for Google's OAuth token endpoint (``token_uri`` of a service-account key).

    It checks each JWT-bearer grant against the key's public half, as Google does, and records who asked,
    so a test can prove that calls were made with the service-account key of a ``GcpCredentials`` block.
    """

    public_pem: bytes
    url: str = ""
    grants: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> TokenEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from google.auth import jwt

                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                form = urllib.parse.parse_qs(body)
                try:
                    # google-auth addresses the assertion to Google's endpoint whatever token_uri says.
                    claims = jwt.decode(form["assertion"][0], certs=endpoint.public_pem, audience=GOOGLE_TOKEN_URI)
                except Exception as exc:
                    endpoint.rejected.append(repr(exc))
                    self._answer(400, {"error": "invalid_grant"})
                    return
                endpoint.grants.append(claims)
                self._answer(
                    200,
                    {"access_token": f"local-token-{len(endpoint.grants)}", "expires_in": 3600, "token_type": "Bearer"},
                )

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        threading.Thread(target=self._server.serve_forever, name="token-endpoint", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def service_account_key(project: str, email: str) -> tuple[dict[str, str], bytes]:
    """A service-account key file's contents with a freshly generated RSA key; and its public key (PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "local-test-key",
        "private_key": private_pem,
        "client_email": email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "",  # set by the caller to its TokenEndpoint
    }
    return info, public_pem
