"""The reusable local Prefect server (``controller/prefect_server.py``), as users meet it through ``fanout``:
two commands that start at once share one server, ``fanout server`` prints its UI, ``fanout server stop``
stops it, an idle server stops itself but never while a command uses it, and a ``fanout run`` on it is a
flow run the server's API shows. Real processes throughout; every wait is for its condition, with a
deadline derived from the server's own start timeout or idle time.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from testenv import PROJECT, REGION, migrated_prefect_database

from controller import prefect_server
from controller.prefect_server import ServerState, configured_api_url, local_api, read_state

pytestmark = pytest.mark.slow

FANOUT = [sys.executable, "-m", "controller.cli"]
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])  # set by conftest


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A private cache dir (its server's PREFECT_HOME with the test run's migrated database), the user's own
    PREFECT_HOME apart, and no configured Prefect API."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    database = prefect_server.server_home(tmp_path / "cache" / "prefect-server") / "prefect.db"
    if not database.exists():
        migrated_prefect_database(database)
    env.update(FANOUT_CACHE_DIR=str(tmp_path / "cache"), PREFECT_HOME=str(tmp_path / "user-home"), **extra)
    return env


def _fanout(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    timeout = START_TIMEOUT * 2
    return subprocess.run(
        [*FANOUT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.1)
    return result


def test_two_commands_started_at_once_share_one_server_until_stop(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: _fanout(["server", "start"], env), range(2))
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    outputs = sorted([first.stdout, second.stdout])
    state = read_state(tmp_path / "cache" / "prefect-server")
    assert state is not None
    assert outputs == [f"already running: Prefect UI at {state.url}\n", f"started: Prefect UI at {state.url}\n"]
    try:
        shown = _fanout(["server"], env)
        assert shown.returncode == 0
        assert f"Prefect UI at {state.url} (API {state.api_url})" in shown.stdout
        assert "stops after 30 min without use" in shown.stdout
        with urllib.request.urlopen(state.url, timeout=30) as page:  # the UI, not only the API
            assert page.status == 200 and "<html" in page.read().decode().lower()
    finally:
        stopped = _fanout(["server", "stop"], env)
    assert stopped.returncode == 0 and stopped.stdout == f"stopped the local Prefect server at {state.url}\n"
    assert not _alive(state.pid)
    assert read_state(tmp_path / "cache" / "prefect-server") is None
    again = _fanout(["server"], env)
    assert "no local Prefect server runs" in again.stdout


def test_an_idle_server_stops_itself_but_not_while_a_command_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = 1.5
    for name, value in _env(tmp_path, FANOUT_SERVER_IDLE_MINUTES=str(idle / 60)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    with local_api() as state:
        assert state is not None
        assert os.environ["PREFECT_API_URL"] == state.api_url
        # In use for several idle periods (the server checks every idle/4 s): it must keep serving.
        time.sleep(idle * 3)
        assert _alive(state.pid) and read_state(tmp_path / "cache" / "prefect-server") == state  # not stopping
        _wait(lambda: prefect_server.healthy(state, timeout=10), START_TIMEOUT, "the server in use to answer")
    assert "PREFECT_API_URL" not in os.environ  # the command's setting does not outlive it
    # Unused from here: it stops within an idle period, a check interval and its own shutdown.
    _wait(lambda: not _alive(state.pid), idle + idle / 4 + prefect_server.STOP_TIMEOUT, "the idle server to stop")
    assert read_state(tmp_path / "cache" / "prefect-server") is None
    assert "idle for" in (tmp_path / "cache" / "prefect-server" / "server.log").read_text()


def test_a_run_on_the_local_server_is_a_flow_run_it_shows(tmp_path: Path, emulator: Any) -> None:
    """The session's shared server (tests/conftest.py): started by the first `fanout run`, reused after."""
    spec = tmp_path / "one.yaml"
    spec.write_text(json.dumps({"batch_id": "local-server", "items": [{"job": "hello", "args": ["local"]}]}))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    args = ["run", str(spec), "--emulator", emulator.url, "--project", PROJECT, "--region", REGION]
    done = _fanout([*args, "--report-to", str(tmp_path), "--quiet"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "local-server" / "report.json").read_text())
    state = read_state()
    assert state is not None and prefect_server.healthy(state)  # still up after the command: reused next time
    request = urllib.request.Request(f"{state.api_url}/flow_runs/{report['flow_run_id']}")
    with urllib.request.urlopen(request, timeout=30) as answer:
        flow_run = json.load(answer)
    assert flow_run["state_type"] == "COMPLETED"
    assert flow_run["parameters"]["batch_id"] == "local-server"


def test_an_invalid_idle_time_is_refused_before_anything_starts(tmp_path: Path) -> None:
    spec = tmp_path / "one.yaml"
    spec.write_text(json.dumps({"items": [{"job": "hello", "args": ["x"]}]}))
    done = _fanout(
        ["run", str(spec), "--emulator", "http://127.0.0.1:9"], _env(tmp_path, FANOUT_SERVER_IDLE_MINUTES="soon")
    )
    assert done.returncode == 2
    assert "FANOUT_SERVER_IDLE_MINUTES: 'soon' is not a number of minutes" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cache" / "prefect-server" / "state.json").exists()


def test_a_configured_api_is_found_in_the_environment_or_the_active_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "profiles.toml"))
    assert configured_api_url() is None  # no file
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.ephemeral]\n[profiles.team]\nPREFECT_API_URL = "http://prefect.internal/api"\n'
    )
    assert configured_api_url() == "http://prefect.internal/api"
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")
    assert configured_api_url() is None
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere/api")
    assert configured_api_url() == "http://elsewhere/api"


def test_state_survives_only_for_its_own_process(tmp_path: Path) -> None:
    """A state file left by a server that is gone (a reboot, a kill -9) is not taken for a running server."""
    directory = tmp_path / "cache" / "prefect-server"
    directory.mkdir(parents=True)
    code = "import os; print(os.getpid())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    state = ServerState(pid=int(gone.stdout), port=9, started_at="2026-01-01T00:00:00+00:00", idle_seconds=60)
    (directory / "state.json").write_text(json.dumps(state.__dict__))
    shown = _fanout(["server"], _env(tmp_path))
    assert "no local Prefect server runs" in shown.stdout
    stopped = _fanout(["server", "stop"], _env(tmp_path))
    assert stopped.stdout == "no local Prefect server runs\n"
    assert not (directory / "state.json").exists()


def test_a_server_whose_state_was_deleted_stops_itself(tmp_path: Path) -> None:
    """Nothing can find it any more (e.g. its cache dir was cleaned): it must not run on forever."""
    env = _env(tmp_path, FANOUT_SERVER_IDLE_MINUTES="1")  # checks every 15 s; idle only after 60 s unused
    started = _fanout(["server", "start"], env)
    assert started.returncode == 0, started.stderr
    directory = tmp_path / "cache" / "prefect-server"
    state = read_state(directory)
    assert state is not None
    (directory / "state.json").unlink()
    _wait(lambda: not _alive(state.pid), 15 + prefect_server.STOP_TIMEOUT, "the server to stop")
    assert "state is gone: stopping" in (directory / "server.log").read_text()


def test_a_configured_prefect_api_that_does_not_answer_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """A PREFECT_API_URL (or profile) naming a server that is down: one line naming it and the fix, exit 2,
    and nothing launched (no emulator started, no report), rather than a minute of retries and tracebacks."""
    with socket.socket() as sock:  # a port nothing listens on: bound here, never listened on
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        env = {**_env(tmp_path), "PREFECT_API_URL": down}
        args = ["run", "examples/hello.yaml", "--report-to", str(tmp_path / "reports")]
        done = _fanout(args, env)
        assert done.returncode == 2, (done.stdout, done.stderr[-3000:])
        assert done.stderr == (
            f"fanout: the Prefect API at {down} does not answer ([Errno 111] Connection refused); it is set by "
            "PREFECT_API_URL. Start that Prefect server, or run `unset PREFECT_API_URL` and fanout starts its own "
            "local server\n"
        )
        assert done.stdout == ""
        assert not (tmp_path / "reports").exists()

        profiles = tmp_path / "profiles.toml"
        profiles.write_text(f'active = "team"\n[profiles.team]\nPREFECT_API_URL = "{down}"\n')
        env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"} | {"PREFECT_PROFILES_PATH": str(profiles)}
        done = _fanout(args, env)
    assert done.returncode == 2
    assert f"it is set by the Prefect profile 'team' ({profiles})" in done.stderr
    assert "run `prefect config unset PREFECT_API_URL`" in done.stderr
    assert "Traceback" not in done.stderr


def _api(state: ServerState, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{state.api_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def test_each_cache_folder_s_server_keeps_its_own_database(tmp_path: Path) -> None:
    """Two cache folders, two servers, two databases (each under its cache folder), neither the user's
    PREFECT_HOME: a flow run created on one is not listed by the other."""
    first_env, second_env = _env(tmp_path / "first"), _env(tmp_path / "second")
    with ThreadPoolExecutor(2) as pool:  # started at the same moment, as two checkouts may
        started = list(pool.map(lambda env: _fanout(["server", "start"], env), [first_env, second_env]))
    assert [done.returncode for done in started] == [0, 0], [done.stderr[-2000:] for done in started]
    states = [read_state(tmp_path / name / "cache" / "prefect-server") for name in ("first", "second")]
    try:
        assert states[0] is not None and states[1] is not None
        flow = _api(states[0], "/flows/", {"name": "only-on-the-first"})
        run = _api(states[0], "/flow_runs/", {"flow_id": flow["id"], "name": "kept-apart"})
        assert [r["id"] for r in _api(states[0], "/flow_runs/filter", {})] == [run["id"]]
        assert _api(states[1], "/flow_runs/filter", {}) == []
        for name in ("first", "second"):
            assert (tmp_path / name / "cache" / "prefect-server" / "home" / "prefect.db").is_file()
            assert not (tmp_path / name / "user-home" / "prefect.db").exists()
    finally:
        for env in (first_env, second_env):
            _fanout(["server", "stop"], env)


def test_a_server_that_fails_to_start_says_why(tmp_path: Path) -> None:
    env = _env(tmp_path, PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
    done = _fanout(["server", "start"], env)
    assert done.returncode == 1
    assert "the local Prefect server exited with code 3 while starting" in done.stderr
    assert "unable to open database file" in done.stderr  # the cause, from its log
    assert "Application startup failed" in (tmp_path / "cache" / "prefect-server" / "server.log").read_text()


def test_server_help_lists_the_actions_a_user_types_and_nothing_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        prefect_server.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "SUPPRESS" not in text and not re.search(r"\bserve\b", text), text
    assert all(f"    {action} " in text for action in ("status", "start", "stop")), text
