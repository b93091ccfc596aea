"""The Prefect UI a `fanout run` points to, in a real browser (Debian's headless Chromium over the DevTools
protocol, bench/chromium.py): the local server `fanout server` starts tells its UI where its API is, and the
"View at" link a run prints opens the batch's flow run with its state (Failed for a batch with a failed
item, Cancelled for one interrupted with Ctrl-C) and its progress and report artifacts.

Run alone with: .venv/bin/python -m pytest -m browser tests/prefect/test_prefect_ui.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from testenv import PROJECT, REGION

from bench.chromium import Browser
from cloudrun_emulator import Emulator
from controller import prefect_server

pytestmark = [pytest.mark.browser, pytest.mark.slow(minutes=2)]

REPO = Path(__file__).resolve().parents[2]
FANOUT = [sys.executable, "-m", "controller.cli"]
START = prefect_server.start_timeout() + 120.0  # a first command starts the run's shared server
PAGE_S = 90.0  # the UI's first load compiles nothing, but a loaded machine serves its bundle slowly
RUNNING = re.compile(r"· [1-9][0-9]* running")
VIEW_AT = re.compile(r"View at (http://\S+/runs/flow-run/[0-9a-f-]{36})")
SCREENSHOTS = os.environ.get("FANOUT_SCREENSHOTS")  # a folder: keep the pages seen (docs/prefect.md's)


def _env() -> dict[str, str]:
    """As a user's shell: no Prefect API configured, so `fanout run` uses the local server (the test run's
    shared one, tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PYTHONUNBUFFERED": "1"}


def _start(spec: Path, emulator: Emulator, reports: Path, out: Path) -> subprocess.Popen[str]:
    args = ["run", str(spec), "--emulator", emulator.url, "--project", PROJECT, "--region", REGION]
    with out.open("w") as sink:
        return subprocess.Popen(
            [*FANOUT, *args, "--report-to", str(reports), "--poll-interval", "0.5"],
            cwd=REPO,
            env=_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the signal below reaches this command only
        )


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.2)
    return found


def _view_at(out: Path) -> str | None:
    found = VIEW_AT.search(out.read_text())
    return found.group(1) if found else None


def _shows(browser: Browser, *texts: str) -> str:
    """Wait until the page's text holds every one of ``texts``; the text."""
    condition = " && ".join(f"document.body.innerText.includes({json.dumps(t)})" for t in texts)
    browser.wait_for(f"document.body && {condition}", deadline_s=PAGE_S)
    return browser.text()


def _artifacts_tab(browser: Browser) -> None:
    browser.evaluate(
        """[...document.querySelectorAll('.p-tab, button, [role=tab]')]
        .find((node) => node.textContent.trim() === 'Artifacts').click()"""
    )


def _look(browser: Browser, url: str, batch_id: str, state: str, name: str) -> None:
    """The flow run's page: the batch id and its state, then the progress and report artifacts."""
    browser.open_page()
    browser.navigate(url)
    text = _shows(browser, batch_id, state, "launch-0")
    assert "Can't connect to Server API" not in text
    if SCREENSHOTS:
        browser.screenshot(Path(SCREENSHOTS) / f"{name}.png")
    _artifacts_tab(browser)
    _shows(browser, "fanout-progress", "fanout-report", "fanout-failed-items")
    if SCREENSHOTS:
        browser.screenshot(Path(SCREENSHOTS) / f"{name}-artifacts.png")


def test_the_view_at_link_shows_the_failed_and_the_cancelled_batch(
    browser: Browser, emulator: Emulator, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    failing = tmp_path / "failing.yaml"
    failing.write_text(
        json.dumps(
            {
                "batch_id": "ui-failed",
                "items": [
                    {"key": "ok", "job": "hello", "args": ["Ada"]},
                    {"key": "bad", "job": "flaky", "args": ["--exit-code", "3"]},
                ],
            }
        )
    )
    out = tmp_path / "failed.out"
    run = _start(failing, emulator, reports, out)
    assert run.wait(START) == 1, out.read_text()[-3000:]
    url = _view_at(out)
    assert url is not None, out.read_text()[-3000:]

    # The server the run used tells its UI the API it listens on, not Prefect's default port.
    state = prefect_server.read_state()
    assert state is not None and url.startswith(state.url + "/")
    with urllib.request.urlopen(f"{state.url}/ui-settings", timeout=30) as answer:
        assert json.load(answer)["api_url"] == state.api_url
    _look(browser, url, "ui-failed", "Failed", "prefect-ui-failed")

    # Interrupted with Ctrl-C while its items run: Cancelled, its message with the counts and the report.
    long = tmp_path / "long.yaml"
    long.write_text(
        json.dumps(
            {
                "batch_id": "ui-cancelled",
                "items": [{"job": "hello", "args": [f"n{i}", "--sleep", "300"]} for i in range(3)],
            }
        )
    )
    out = tmp_path / "cancelled.out"
    run = _start(long, emulator, reports, out)
    try:
        # Its progress line (one every 10 s off a terminal) says its items run.
        _wait(lambda: run.poll() is not None or RUNNING.search(out.read_text()), START, "items running")
        assert run.poll() is None, out.read_text()[-3000:]
        url = _wait(lambda: _view_at(out), 30, "the View at link")
        os.killpg(run.pid, signal.SIGINT)
        assert run.wait(180) == 130, out.read_text()[-3000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    printed = out.read_text()
    assert "Crash detected" not in printed and "Traceback" not in printed, printed[-3000:]
    assert "the batch was interrupted: Ctrl-C (SIGINT)" in printed, printed[-3000:]
    assert url is not None
    flow_run_id = url.rsplit("/", 1)[1]
    with urllib.request.urlopen(f"{state.api_url}/flow_runs/{flow_run_id}", timeout=30) as answer:
        flow_run = json.load(answer)
    assert flow_run["state"]["type"] == "CANCELLED", flow_run["state"]
    assert flow_run["state"]["message"] == (
        "batch ui-cancelled cancelled by Ctrl-C (SIGINT): 3 of 3 items did not succeed (3 cancelled); "
        f"report: {reports / 'ui-cancelled' / 'report.json'}"
    )
    _look(browser, url, "ui-cancelled", "Cancelled", "prefect-ui-cancelled")
