"""Prefect settings for quiet runs on machines without internet (laptops, CI, the embedded default), and
placeholder Google credentials for trying prefect-gcp's blocks offline.

The settings are applied as environment defaults before Prefect is imported; anything the user set wins.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

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


# Application Default Credentials of the kind `gcloud auth application-default login` writes, with values
# that are no secret and reach nothing: google-auth loads them without a network call, so prefect-gcp's
# `GcpCredentials()` can be created and saved on a laptop with no Google account. They name no project, so
# the controller runs on its embedded emulator; any call to Google with them fails (the token cannot refresh).
OFFLINE_ADC = {
    "type": "authorized_user",
    "client_id": "fanout-offline-placeholder",
    "client_secret": "not-a-secret",
    "refresh_token": "not-a-token",
}


def offline_credentials(cache_dir: Path) -> Path:
    """Write the placeholder credentials under ``cache_dir`` (once); their path."""
    path = cache_dir / "offline-adc.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(OFFLINE_ADC, indent=1) + "\n")
    return path


def print_offline_credentials(cache_dir: Path) -> int:
    """``fanout offline-credentials``: the export line for ``eval``, and what it does on stderr."""
    import sys

    path = offline_credentials(cache_dir)
    print(f"export GOOGLE_APPLICATION_CREDENTIALS={shlex.quote(str(path))}")
    print(
        "# placeholder Application Default Credentials: GcpCredentials() loads them offline; they name no "
        "project (runs use the local emulator) and reach no Google API. `unset GOOGLE_APPLICATION_CREDENTIALS` "
        "before using Google.",
        file=sys.stderr,
    )
    return 0
