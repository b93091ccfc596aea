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
    # The temporary server's own request logs are noise on a command line.
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
}


def apply_quiet_defaults() -> None:
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
