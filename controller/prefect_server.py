"""A local Prefect API server that outlives one command: started on demand, found again, stopped when idle.

Without a configured Prefect API, Prefect starts a temporary server inside every flow-running process and
stops it at exit: 5-15 s of every ``fanout run`` here. Instead the first ``fanout run`` starts this server
in the background (``python -m controller.prefect_server serve``, its own session), records it in the user
cache dir, and every later command uses it. Each command holds a shared lock on ``users.lock`` while it
runs and touches ``last-used`` at both ends; the server stops itself once nobody holds the lock and
``last-used`` is older than its idle time (``FANOUT_SERVER_IDLE_MINUTES``, default 30), or on ``fanout
server stop``. Starting and stopping happen under an exclusive ``start.lock``, so two commands that start
at once share one server. The server owns a PREFECT_HOME of its own, ``home/`` beside its state: its SQLite
database (every flow run the UI it prints shows) is never another cache folder's, nor ``~/.prefect``.

Standard library only: this module runs before Prefect is imported, and decides whether it needs to be.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from controller.offline import apply_quiet_defaults
from controller.warm_hosts import stop_all

IDLE_MINUTES = 30.0
START_TIMEOUT = 120.0  # a first start creates the database and runs its migrations: 10-40 s on a busy machine
STOP_TIMEOUT = 30.0
_SERVE_MODULE = "controller.prefect_server"
WORK_POOL = "fanout-local"  # prefect.yaml's process work pool


class ServerError(RuntimeError):
    """The local server could not be started, found or stopped; the message says why and where its log is."""


class ServerSettingError(ServerError):
    """A setting of the local server (an environment variable) is invalid."""


def state_dir() -> Path:
    """``$FANOUT_CACHE_DIR`` or ``$XDG_CACHE_HOME/fanout`` or ``~/.cache/fanout``, then ``prefect-server``."""
    root = os.environ.get("FANOUT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fanout"
    )
    return Path(root) / "prefect-server"


def server_home(directory: Path | None = None) -> Path:
    """The local server's own PREFECT_HOME (its SQLite database, its UI build): beside its state, so each
    cache folder's server keeps its runs apart from another's and from the user's ``~/.prefect``."""
    return (directory or state_dir()) / "home"


def idle_seconds_from_env() -> float:
    text = os.environ.get("FANOUT_SERVER_IDLE_MINUTES") or str(IDLE_MINUTES)
    try:
        minutes = float(text)
    except ValueError:
        raise ServerSettingError(f"FANOUT_SERVER_IDLE_MINUTES: {text!r} is not a number of minutes") from None
    if not 0 < minutes < 10_000_000:
        raise ServerSettingError(f"FANOUT_SERVER_IDLE_MINUTES: {text!r} must be a positive number of minutes")
    return minutes * 60


@dataclasses.dataclass(frozen=True)
class ServerState:
    """What ``state.json`` records about a running server."""

    pid: int
    port: int
    started_at: str
    idle_seconds: float

    @property
    def url(self) -> str:
        """The UI (and the API under ``/api``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def configured_api_url() -> str | None:
    """The Prefect API the user configured (``PREFECT_API_URL``, or the active profile's), else None.

    Read without importing Prefect (2 s): the environment, then ``profiles.toml`` as Prefect finds it.
    """
    found = _configured_api()
    return found[0] if found else None


def _configured_api() -> tuple[str, str] | None:
    """The configured Prefect API and where it is set (for a message that says how to change it)."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url, "PREFECT_API_URL"
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    profile = profiles.get("profiles", {}).get(active, {})
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    if not (isinstance(url, str) and url):
        return None
    return url, f"the Prefect profile {active!r} ({path})"


def check_configured_api(timeout: float = 10.0) -> None:
    """Refuse a configured Prefect API that does not answer at all (nothing listens, no such host), before
    anything starts: Prefect would retry it for a minute and end in tracebacks. An HTTP answer of any kind
    (a cloud API asking for a key) counts as answering; Prefect reports what it means."""
    found = _configured_api()
    if found is None:
        return
    url, where = found
    shown = _without_secrets(url)
    try:
        # A URL the user configured for Prefect; only its health endpoint is asked, with no credentials.
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):  # noqa: S310
            return
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        unset = "unset PREFECT_API_URL" if where == "PREFECT_API_URL" else "prefect config unset PREFECT_API_URL"
        raise ServerSettingError(
            f"the Prefect API at {shown} does not answer ({reason}); it is set by {where}. Start that Prefect "
            f"server, or run `{unset}` and fanout starts its own local server"
        ) from None


# -- locks and state ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path, kind: int, timeout: float, what: str) -> Iterator[IO[str]]:
    """An ``flock`` on ``path`` (created if missing), waited for up to ``timeout`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, kind | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServerError(f"{what}: {path} stayed locked for {timeout:.0f}s") from None
                time.sleep(0.05)
        yield handle
    finally:
        handle.close()  # releases the lock


def _try_lock(path: Path, kind: int) -> IO[str] | None:
    handle = path.open("a")
    try:
        fcntl.flock(handle, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def read_state(directory: Path | None = None) -> ServerState | None:
    path = (directory or state_dir()) / "state.json"
    try:
        data = json.loads(path.read_text())
        return ServerState(
            pid=int(data["pid"]),
            port=int(data["port"]),
            started_at=str(data["started_at"]),
            idle_seconds=float(data["idle_seconds"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(directory: Path, state: ServerState) -> None:
    partial = directory / f"state.json.{os.getpid()}"
    partial.write_text(json.dumps(dataclasses.asdict(state)))
    partial.replace(directory / "state.json")


def _touch(path: Path) -> None:
    path.touch()
    os.utime(path)


def _is_our_server(pid: int) -> bool:
    """The pid is alive and is a ``controller.prefect_server serve`` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): a live pid is the best evidence there is
    return _SERVE_MODULE.encode() in cmdline and b"serve" in cmdline


def healthy(state: ServerState, timeout: float = 2.0) -> bool:
    try:
        # An http:// URL built here from a port number, never from input.
        with urllib.request.urlopen(f"{state.api_url}/health", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- starting, finding, stopping ---------------------------------------------------------------------------


def _spawn(directory: Path, port: int, idle_seconds: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
    env["PREFECT_HOME"] = str(server_home(directory))
    # Its log is a file: warnings and errors go there (why a start failed, above all), whatever quiet level
    # the command that starts it has for its own console (controller.offline).
    env["PREFECT_SERVER_LOGGING_LEVEL"] = "WARNING"
    log = (directory / "server.log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", _SERVE_MODULE, "serve", "--port", str(port), "--idle-seconds", str(idle_seconds)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=directory,
            start_new_session=True,  # a Ctrl-C in the terminal that started it must not stop it
        )
    finally:
        log.close()


def _log_tail(directory: Path, lines: int = 15) -> str:
    try:
        text = (directory / "server.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_healthy(proc: subprocess.Popen[bytes], state: ServerState, directory: Path, timeout: float) -> None:
    """Until the server answers; fails at once if it exits, else after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    while not healthy(state):
        if proc.poll() is not None:
            raise ServerError(
                f"the local Prefect server exited with code {proc.returncode} while starting; "
                f"{directory / 'server.log'}:\n{_log_tail(directory)}"
            )
        if time.monotonic() > deadline:
            proc.terminate()
            raise ServerError(
                f"the local Prefect server did not answer within {timeout:.0f}s "
                f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); {directory / 'server.log'}:\n"
                f"{_log_tail(directory)}"
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def start_timeout() -> float:
    """How long a start may take: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, as for Prefect's own."""
    text = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    try:
        return max(float(text), 1.0) if text else START_TIMEOUT
    except ValueError:
        return START_TIMEOUT


def ensure(directory: Path | None = None, idle_seconds: float | None = None) -> tuple[ServerState, bool]:
    """The running local server, started first if there is none. Returns it and whether it was started."""
    directory = directory or state_dir()
    timeout = start_timeout()
    with _locked(directory / "start.lock", fcntl.LOCK_EX, timeout + STOP_TIMEOUT, "starting the Prefect server"):
        state = read_state(directory)
        if state is not None and _is_our_server(state.pid):
            # A recorded server is past its start; give a busy one a few seconds before replacing it.
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and _is_our_server(state.pid):
                if healthy(state, timeout=5.0):
                    _touch(directory / "last-used")
                    return state, False
                time.sleep(0.5)
            _terminate(state.pid)
        _touch(directory / "last-used")  # a fresh server must not find itself idle before its first user
        idle = idle_seconds if idle_seconds is not None else idle_seconds_from_env()
        port = _free_port()
        proc = _spawn(directory, port, idle)
        state = ServerState(
            pid=proc.pid, port=port, started_at=datetime.now(UTC).isoformat(timespec="seconds"), idle_seconds=idle
        )
        _wait_healthy(proc, state, directory, timeout)
        _write_state(directory, state)
        return state, True


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait for the pid to go, SIGKILL after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_our_server(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when this process started it


def stop(directory: Path | None = None) -> ServerState | None:
    """Stop the local server if one runs, and the warm hosts beside it; returns the server stopped."""
    directory = directory or state_dir()
    with _locked(directory / "start.lock", fcntl.LOCK_EX, START_TIMEOUT, "stopping the Prefect server"):
        state = read_state(directory)
        (directory / "state.json").unlink(missing_ok=True)
        stop_all(directory)
        if state is None or not _is_our_server(state.pid):
            return None
        _terminate(state.pid)
        return state


@contextlib.contextmanager
def local_api() -> Iterator[ServerState | None]:
    """For one command: when no Prefect API is configured, point ``PREFECT_API_URL`` at the local server
    (started if needed) and keep it in use until the block ends. Yields it, or None when one is configured.

    Prefect reads its settings from the environment once, at import; in a process that imported it before
    (the warm host's, ``controller.warm``) they are read again here.
    """
    if configured_api_url() is not None:
        check_configured_api()
        yield None
        return
    idle = idle_seconds_from_env()  # a bad setting is refused before anything starts
    with in_use(idle_seconds=idle) as state:
        context: Any = sys.modules.get("prefect.context")  # imported already (the warm host), or not yet
        before = context.GLOBAL_SETTINGS_CONTEXT if context is not None else None
        os.environ["PREFECT_API_URL"] = state.api_url
        refresh_prefect_settings()
        try:
            yield state
        finally:
            os.environ.pop("PREFECT_API_URL", None)
            if context is not None:  # the process's settings as they were, not as the environment says now
                context.GLOBAL_SETTINGS_CONTEXT = before


@contextlib.contextmanager
def in_use(directory: Path | None = None, idle_seconds: float | None = None) -> Iterator[ServerState]:
    """The local server (started if needed), kept from stopping as idle until the block ends."""
    directory = directory or state_dir()
    with _locked(directory / "users.lock", fcntl.LOCK_SH, START_TIMEOUT, "using the Prefect server"):
        state, _started = ensure(directory, idle_seconds)
        try:
            yield state
        finally:
            _touch(directory / "last-used")


def refresh_prefect_settings() -> None:
    """Have an imported Prefect read its settings from the environment again (a no-op before its import)."""
    context = sys.modules.get("prefect.context")
    if context is not None:
        context.refresh_global_settings_context()


# -- the server process ------------------------------------------------------------------------------------


# Locks the stopping server keeps until its process exits (closing a handle releases its lock).
_held: list[IO[str]] = []


def _idle_watch(directory: Path, idle_seconds: float, stop_serving: Callable[[], None], done: threading.Event) -> None:
    """Stop serving once no command holds ``users.lock`` and ``last-used`` is older than ``idle_seconds``.

    Takes ``users.lock`` and then ``start.lock`` without ever waiting (commands take them in the same order
    and wait), and keeps both until the process exits: a command that comes meanwhile waits, then finds no
    state and starts a new server, never one that is stopping.
    """
    check = min(max(idle_seconds / 4, 0.2), 15.0)
    while not done.wait(check):
        state = read_state(directory) if directory.is_dir() else None
        if state is None or state.pid != os.getpid():
            # Not recorded as the server. While its starter holds start.lock it is still starting; otherwise
            # its state is gone or names another server (the folder cleaned, a `stop` that could not reach
            # it), and no command can find it any more.
            if directory.is_dir():
                starting = _try_lock(directory / "start.lock", fcntl.LOCK_EX)
                if starting is None:
                    continue
                _held.append(starting)
            print("fanout: the local Prefect server's state is gone: stopping", flush=True)
            stop_serving()
            return
        users = _try_lock(directory / "users.lock", fcntl.LOCK_EX)
        if users is None:
            continue
        try:
            last = (directory / "last-used").stat().st_mtime
        except OSError:
            last = 0.0
        if time.time() - last < idle_seconds:
            users.close()
            continue
        starting = _try_lock(directory / "start.lock", fcntl.LOCK_EX)
        if starting is None:
            users.close()
            continue
        _held.extend((users, starting))
        (directory / "state.json").unlink(missing_ok=True)
        print(f"fanout: idle for {idle_seconds / 60:g} min: stopping the local Prefect server", flush=True)
        stop_serving()
        return


def serve(port: int, idle_seconds: float) -> int:
    """Run Prefect's API and UI on 127.0.0.1:``port`` until idle or SIGTERM (``fanout server stop``)."""
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    apply_quiet_defaults()
    # The UI asks /ui-settings where its API is. Prefect answers PREFECT_UI_API_URL, else its own default
    # host and port (4200): not where uvicorn listens here, and the page would stay blank. Set, not
    # defaulted: the port is chosen at start, so no setting of the user's can know it.
    os.environ["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    os.environ["PREFECT_SERVER_API_PORT"] = str(port)
    os.environ["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    import uvicorn
    from prefect.settings import get_current_settings

    get_current_settings().home.mkdir(parents=True, exist_ok=True)  # its SQLite database goes there
    directory = Path.cwd()
    config = uvicorn.Config(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    done = threading.Event()

    def stop_serving() -> None:
        server.should_exit = True

    watcher = threading.Thread(
        target=_idle_watch, args=(directory, idle_seconds, stop_serving, done), name="idle-watch", daemon=True
    )
    watcher.start()
    try:
        server.run()
    finally:
        done.set()
    return 0


# -- ``fanout server`` -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout server",
        description="The local Prefect server that `fanout run` uses when no Prefect API is configured "
        "(PREFECT_API_URL or a Prefect profile). It starts on demand, is shared by every command, and stops "
        "after FANOUT_SERVER_IDLE_MINUTES (default 30) without use. Its state is in "
        f"{state_dir()} (FANOUT_CACHE_DIR moves it).",
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("status", help="print the UI URL of the running server (the default)")
    sub.add_parser("start", help="start it now (fanout run would start it on demand)")
    sub.add_parser("stop", help="stop it now, even under a running batch (a later fanout run starts it again)")
    sub.add_parser(
        "env",
        help="start it if needed and print `export PREFECT_API_URL=...` for the prefect CLI: "
        'eval "$(fanout server env)"',
    )
    worker = sub.add_parser(
        "worker",
        help="run a Prefect worker on a process work pool (created if missing) against it, keeping it up "
        "meanwhile; Ctrl-C stops the worker",
    )
    worker.add_argument(
        "--pool", default=WORK_POOL, help=f"the process work pool (default {WORK_POOL}, prefect.yaml's)"
    )
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    """The server process's own command line (``_spawn``): not an action a user types, so not in the help
    (a subcommand hidden with SUPPRESS still shows in argparse's list of them)."""
    parser = argparse.ArgumentParser(prog=f"python -m {_SERVE_MODULE} serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-seconds", type=float, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        served = _serve_parser().parse_args(argv[1:])
        return serve(served.port, served.idle_seconds)
    args = build_parser().parse_args(argv)
    action = args.action or "status"
    try:
        if action == "worker":
            return run_worker(args.pool)
        if (configured := configured_api_url()) is not None and action == "env":
            print(f"a Prefect API is configured ({_without_secrets(configured)}): nothing to export", file=sys.stderr)
            return 0
        if (configured := configured_api_url()) is not None and action != "stop":
            print(f"a Prefect API is configured ({_without_secrets(configured)}): fanout run uses it, no local server")
            return 0
        if action == "stop":
            stopped = stop()
            print(f"stopped the local Prefect server at {stopped.url}" if stopped else "no local Prefect server runs")
            return 0
        if action == "env":
            state, _ = ensure()
            print(f"export PREFECT_API_URL={state.api_url}")
            return 0
        if action == "start":
            state, started = ensure()
            print(f"{'started' if started else 'already running'}: Prefect UI at {state.url}")
            return 0
        found = read_state()
        if found is None or not _is_our_server(found.pid) or not healthy(found):
            print("no local Prefect server runs; `fanout run` starts one on demand (or: fanout server start)")
            return 0
        print(f"Prefect UI at {found.url} (API {found.api_url}), running since {found.started_at}")
        print(_idle_text(found))
        return 0
    except ServerError as exc:
        print(f"fanout server: {exc}", file=sys.stderr)
        return 1


def run_worker(pool: str) -> int:
    """``prefect worker start`` on a process work pool, against the configured Prefect API or the local server
    (started if needed and kept from stopping as idle while the worker runs, even when this shell exported
    its URL with ``fanout server env``). The worker creates the pool when it is missing. Its exit code."""
    configured = configured_api_url()
    recorded = read_state()
    ours = configured is None or (recorded is not None and configured.rstrip("/") == recorded.api_url)
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if ours:
            state = stack.enter_context(in_use())
            env["PREFECT_API_URL"] = state.api_url
            print(f"fanout: a Prefect worker on pool {pool!r} of the local server, UI at {state.url}", flush=True)
        # In a session of its own, so a Ctrl-C reaches it once, forwarded from here, as does a SIGTERM (`kill
        # %1` of `fanout server worker &`): it stops its flow runs' processes as it does for either. The
        # handlers are set before it starts: a background job of a shell starts with SIGINT ignored, a child
        # would keep that, and Prefect's worker turns a SIGTERM into a SIGINT to itself.
        started: list[subprocess.Popen[bytes]] = []

        def forward(signum: int, _frame: object) -> None:
            for worker in started:
                worker.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            started.append(subprocess.Popen(command, env=env, start_new_session=True))
            return started[0].wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _idle_text(state: ServerState) -> str:
    return f"stops after {state.idle_seconds / 60:g} min without use, or on `fanout server stop`"


def _without_secrets(url: str) -> str:
    """A URL with any user:password part dropped."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


__all__ = [
    "ServerError",
    "ServerSettingError",
    "ServerState",
    "check_configured_api",
    "configured_api_url",
    "ensure",
    "local_api",
    "main",
    "refresh_prefect_settings",
    "server_home",
    "stop",
]

if __name__ == "__main__":
    sys.exit(main())
