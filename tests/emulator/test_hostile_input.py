"""Input meant to hurt the emulator: a port open to the network, a regular expression that backtracks
catastrophically, JSON nested thousands of levels deep. Each is refused or bounded; nothing else stalls."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloudrun_emulator import Emulator
from tests.emulator.conftest import FAST_POLL, PY, Clients

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# "(a|a)*$" against 30 "a"s and a "!" tries 2**30 ways before it fails: minutes of work for a backtracking engine.
HOSTILE_FILTER = 'textPayload=~"(a|a)*$"'
HOSTILE_LINE = "a" * 30 + "!"
BUDGET = 3.0


def _emulator_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "cloudrun_emulator", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_host_reachable_from_the_network_is_refused(host: str) -> None:
    result = _emulator_cli("--host", host)
    assert result.returncode == 2
    assert f"--host {host} is not a loopback address" in result.stderr
    assert "can run any command on this machine" in result.stderr
    assert "--allow-remote" in result.stderr
    assert "serving" not in result.stdout
    assert "Traceback" not in result.stderr


def test_an_unresolvable_host_is_refused() -> None:
    result = _emulator_cli("--host", "no-such-host.invalid")
    assert result.returncode == 2
    assert "--host 'no-such-host.invalid' cannot be resolved" in result.stderr
    assert "Traceback" not in result.stderr


def test_allow_remote_serves_and_warns() -> None:
    proc = subprocess.Popen(
        [PY, "-m", "cloudrun_emulator", "--port", "0", "--host", "0.0.0.0", "--allow-remote"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout is not None
        assert "serving http://0.0.0.0:" in proc.stdout.readline()
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "WARNING: --host 0.0.0.0 is not a loopback address" in err
    assert "can run any command on this machine as" in err


def _request(url: str, body: bytes | None = None, method: str = "GET", timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_catastrophic_regex_is_cut_off_while_other_requests_are_served() -> None:
    with Emulator(log_query_budget_seconds=BUDGET, kill_grace_seconds=0.2) as emu:
        clients = Clients(emu)
        clients.create_job("printer", f"print({HOSTILE_LINE!r})")
        clients.run("printer").result(timeout=30, polling=FAST_POLL)
        body = json.dumps({"resourceNames": [f"projects/{emu.project}"], "filter": HOSTILE_FILTER}).encode()
        answer: list[tuple[int, dict]] = []
        started = time.monotonic()
        hostile = threading.Thread(target=lambda: answer.append(_request(f"{emu.url}/v2/entries:list", body, "POST")))
        hostile.start()
        job_name = f"{clients.parent}/jobs/printer"
        latencies = []
        while hostile.is_alive():
            before = time.monotonic()
            assert clients.jobs.get_job(name=job_name).name == job_name
            latencies.append(time.monotonic() - before)
        hostile.join()
        elapsed = time.monotonic() - started
    status, error = answer[0]
    assert (status, error["error"]["status"]) == (504, "DEADLINE_EXCEEDED")
    assert f"took more than {BUDGET:g} s" in error["error"]["message"]
    assert elapsed < 30, "the budget did not stop the match"
    assert len(latencies) >= 5, "GetJob was not served while the filter ran"
    # Served alongside, not after: no GetJob waited for the filter's whole budget, and most answered at once.
    assert max(latencies) < BUDGET, f"a GetJob waited {max(latencies):.2f} s behind the filter"
    assert sorted(latencies)[len(latencies) // 2] < 0.5


def test_a_regex_within_budget_still_matches(emu: Emulator, clients: Clients) -> None:
    clients.create_job("printer", "print('needle 42')")
    clients.run("printer").result(timeout=30, polling=FAST_POLL)
    body = {"resourceNames": [f"projects/{emu.project}"], "filter": 'textPayload=~"^needle [0-9]+$"'}
    status, found = _request(f"{emu.url}/v2/entries:list", json.dumps(body).encode(), "POST")
    assert status == 200
    assert [e["textPayload"] for e in found["entries"]] == ["needle 42"]


@pytest.mark.parametrize("depth", [101, 100_000])
def test_deeply_nested_bodies_are_invalid_argument(emu: Emulator, clients: Clients, depth: int) -> None:
    clients.create_job("nest", "pass")
    nested = ('{"a":' * depth + "1" + "}" * depth).encode()
    parent = f"{emu.url}/v2/{clients.parent}"
    for url, method in (
        (f"{parent}/jobs?jobId=deep", "POST"),
        (f"{parent}/jobs/nest:run", "POST"),
        (f"{emu.url}/v2/entries:list", "POST"),
        (f"{emu.url}/_emulator/faults", "POST"),
    ):
        status, body = _request(url, nested, method, timeout=30)
        assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT"), url
        assert "Nesting is deeper than 100 levels" in body["error"]["message"]
    assert clients.jobs.get_job(name=f"{clients.parent}/jobs/nest").name.endswith("/nest")


@pytest.mark.parametrize(("depth", "status"), [(100, 200), (101, 400)])
def test_the_nesting_limit_is_100_levels(emu: Emulator, depth: int, status: int) -> None:
    # entries:list ignores fields it does not know, so only the nesting decides.
    nested = "{" + '"a":{' * (depth - 2) + '"b":1' + "}" * (depth - 2) + "}"
    body = '{"resourceNames": ["projects/p"], "unused": ' + nested + "}"
    assert _request(f"{emu.url}/v2/entries:list", body.encode(), "POST")[0] == status
