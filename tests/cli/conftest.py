"""Fixtures of the command-line tests."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``fanout`` run in this process (``controller.cli.main``), with the command's changes to this process
    (log handlers, the SIGTERM handler, FANOUT_* variables) undone."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("FANOUT_EMULATOR_HOST", "")
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)
