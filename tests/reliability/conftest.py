"""Reliability suite fixtures, and the figures it prints.

Each test records its figures with the ``figures`` fixture. They travel on the test report's
``user_properties`` (so they reach the xdist controller and JUnit XML) and are printed:

* at once, one ``[reliability] name: value`` line on the terminal (written past pytest's capture, so it shows
  with or without ``-s`` and from xdist workers too), and
* again as a "reliability figures" section at the end of the session, when this conftest is loaded in the
  process that owns the terminal (a plain run, or ``pytest tests/reliability``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import CloudRunView, EmulatorProcess

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


@pytest.fixture(scope="module")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A Cloud Run emulator in its own process, for one test module."""
    emu = EmulatorProcess(tmp_path_factory.mktemp("emulator")).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def cloud_run(emulator_process: EmulatorProcess) -> CloudRunView:
    return CloudRunView(emulator_process.url)


@pytest.fixture(autouse=True)
def _no_inherited_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller processes get their emulator explicitly; a stray env var must not redirect them."""
    monkeypatch.delenv("FANOUT_EMULATOR_HOST", raising=False)


def repo_root() -> Path:
    return Path(os.path.dirname(__file__)).parents[1]
