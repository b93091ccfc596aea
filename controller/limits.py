"""Cloud Run's documented limits for jobs, shared by validation, planning and the emulator.

Sources: Cloud Run docs, "Quotas and limits" and "Container runtime contract" (jobs), read 2026-11.
"""

from __future__ import annotations

import re

MAX_TASKS_PER_EXECUTION = 10_000
MAX_TASK_TIMEOUT_SECONDS = 168 * 3600  # 7 days
MAX_RETRIES = 10
MAX_ENV_VARS_PER_CONTAINER = 1000
# Jobs names: lowercase letters, digits and hyphens, start with a letter, at most 63 characters.
JOB_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Environment variables set by Cloud Run itself (container runtime contract); a job may not set them.
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
