"""Prefect settings for quiet runs on machines without internet (laptops, CI, the embedded default).

Applied as environment defaults before Prefect is imported; anything the user set wins.
"""

from __future__ import annotations

import os

QUIET_DEFAULTS = {
    # No usage analytics or telemetry calls home: offline they only produce connection errors.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    # The temporary server (started when no PREFECT_API_URL is set) shares the command's stderr. Its logs are
    # about its own internals, not the batch: request logs, and when it is stopped at exit right after a
    # Ctrl-C, a traceback from its task-run recorder whose last event flush was cut short. A user's own
    # server is another process and keeps its own setting.
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
}


def apply_quiet_defaults() -> None:
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
