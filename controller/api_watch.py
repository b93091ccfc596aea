"""The end of a ``fanout run`` whose Prefect API went away: the report is the record, not the flow run.

Once the batch's report is stored, what is left of the flow is telling the Prefect API how it ended (task
states, artifacts, the flow run's final state). Against a server that is gone, each of those calls waits
out the client's retries, for minutes. ``ApiWatch`` looks at the API every ``GRACE_SECONDS`` from the
moment the report is stored: while the command is still not done and the API does not answer at all (a
refused or timed-out connection; any HTTP answer counts as an answer), it prints the summary, says what the
Prefect UI will lack, and ends the process with the batch's exit code.
"""

from __future__ import annotations

import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

GRACE_SECONDS = 15.0
HEALTH_TIMEOUT = 5.0


def answers(api_url: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    """Whether anything answers HTTP at the Prefect API's ``/health``."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):  # noqa: S310 - the API's URL
            return True
    except urllib.error.HTTPError:
        return True  # refused, but there
    except (OSError, ValueError):
        return False


def unanswered_api() -> str | None:
    """The Prefect API's URL when it does not answer at all (a flow that cannot start says why), else None."""
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    return api_url if api_url and not answers(api_url) else None


class ApiWatch:
    """Started when the report is stored; stopped when the command ends on its own."""

    def __init__(self, grace_seconds: float = GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # the command's own end and this one's never both print
        self._thread: threading.Thread | None = None

    def start(self, conclude: Callable[[], int]) -> None:
        """Watch from now on; ``conclude`` prints the summary and returns the exit code."""
        from prefect.settings import PREFECT_API_URL

        api_url = PREFECT_API_URL.value()
        if not api_url or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, args=(api_url, conclude), name="api-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()

    def _watch(self, api_url: str, conclude: Callable[[], int]) -> None:
        while not self._stopped.wait(self.grace_seconds):
            if answers(api_url):
                continue
            with self._lock:
                if self._stopped.is_set():
                    return
                code = conclude()
                print(
                    f"fanout: the Prefect API at {api_url} stopped answering after the report was stored; the "
                    "flow run's end and its artifacts are not recorded there (the report is the batch's record)",
                    file=sys.stderr,
                )
                sys.stdout.flush()
                sys.stderr.flush()
                # Not a normal exit: its atexit handlers would flush Prefect's logs to the same absent API.
                os._exit(code)


__all__ = ["ApiWatch", "answers", "unanswered_api"]
