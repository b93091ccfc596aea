"""Fixtures of the command-line tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testenv import cli_changes_undone

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``fanout`` run in this process (``controller.cli.main``), with the command's changes to this process
    (log handlers, the SIGTERM handler, FANOUT_* variables) undone."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("FANOUT_EMULATOR_HOST", "")
    with cli_changes_undone(monkeypatch):
        yield
