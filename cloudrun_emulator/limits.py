"""Cloud Run's documented limits for jobs, and its duration format, as the emulator enforces them.

The emulator keeps its own copy on purpose: it stands in for Google, so it must not agree with the controller
it tests by sharing the controller's code. Sources: Cloud Run docs, "Quotas and limits", "Container runtime
contract" (jobs) and the Admin API v2 reference (``Duration`` fields), read 2026-11.
"""

from __future__ import annotations

import math
import re

MAX_TASKS_PER_EXECUTION = 10_000
MAX_TASK_TIMEOUT_SECONDS = 168 * 3600  # 7 days
MAX_RETRIES = 10
MAX_CONTAINERS = 10
MAX_ENV_VARS_PER_CONTAINER = 1000
DEFAULT_MAX_RETRIES = 3
DEFAULT_TASK_TIMEOUT = "600s"
DEFAULT_RESOURCES = {"cpu": "1000m", "memory": "512Mi"}
# Job names: lowercase letters, digits and hyphens, start with a letter, at most 63 characters.
JOB_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Environment variables Cloud Run sets itself (container runtime contract); a job may not set them.
RESERVED_ENV_NAMES = frozenset(
    {
        "PORT",
        "K_SERVICE",
        "K_REVISION",
        "K_CONFIGURATION",
        "CLOUD_RUN_JOB",
        "CLOUD_RUN_EXECUTION",
        "CLOUD_RUN_TASK_INDEX",
        "CLOUD_RUN_TASK_ATTEMPT",
        "CLOUD_RUN_TASK_COUNT",
    }
)
RESERVED_ENV_PREFIX = "X_GOOGLE_"
# google.protobuf.Duration in JSON: decimal seconds with up to nine fractional digits and an "s".
_DURATION_RE = re.compile(r"^(\d+)(?:\.(\d{1,9}))?s$")


def env_name_problem(name: str) -> str | None:
    """Why Cloud Run would refuse this environment variable name, or None if it is accepted."""
    if not name:
        return "an environment variable name may not be empty"
    if "=" in name:
        return f"environment variable name {name!r} may not contain '='"
    if name in RESERVED_ENV_NAMES:
        return f"environment variable {name!r} is reserved: Cloud Run sets it for every task"
    if name.upper().startswith(RESERVED_ENV_PREFIX):
        return f"environment variable {name!r} uses the reserved prefix {RESERVED_ENV_PREFIX}"
    return None


def parse_duration(text: str) -> float:
    """Seconds in a JSON ``Duration`` ("600s", "2.5s"); raises ValueError for anything else."""
    found = _DURATION_RE.match(text.strip())
    if found is None:
        raise ValueError(f"invalid duration {text!r}: expected seconds with an 's' suffix, e.g. '600s'")
    whole, fraction = found.groups()
    seconds = int(whole) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}")
    return seconds


def timeout_problem(timeout: str) -> str | None:
    """Why Cloud Run would refuse this task timeout, or None if it is accepted."""
    try:
        seconds = parse_duration(timeout)
    except ValueError:
        seconds = -1
    if not 0 < seconds <= MAX_TASK_TIMEOUT_SECONDS:
        return f"must be between 1s and {MAX_TASK_TIMEOUT_SECONDS}s"
    return None
