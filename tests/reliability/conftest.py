"""Reliability suite fixtures: a Cloud Run emulator in its own process and a view of its executions.

The figures the suite prints come from the ``figures`` fixture in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import CloudRunView, EmulatorProcess


@pytest.fixture(scope="module")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A Cloud Run emulator in its own process, for one test module."""
    with EmulatorProcess(tmp_path_factory.mktemp("emulator")) as emu:
        yield emu


@pytest.fixture(scope="module")
def cloud_run(emulator_process: EmulatorProcess) -> CloudRunView:
    return CloudRunView(emulator_process.url)


@pytest.fixture(autouse=True)
def _no_inherited_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller processes get their emulator explicitly; a stray env var must not redirect them."""
    monkeypatch.delenv("FANOUT_EMULATOR_HOST", raising=False)


def repo_root() -> Path:
    return Path(os.path.dirname(__file__)).parents[1]
