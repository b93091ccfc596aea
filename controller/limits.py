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


# What the Google provider for Terraform checks before a job reaches the API (`google_cloud_run_v2_job`,
# generated from GoogleCloudPlatform/magic-modules mmv1/products/cloudrunv2/Job.yaml; read 2026-11).
# Task timeout: "A duration in seconds with up to nine fractional digits, ending with 's'", validated with
# this regex by the provider, so "15m" fails `terraform plan` although Cloud Run's docs write minutes.
TASK_TIMEOUT_RE = re.compile(r"^[0-9]+(?:\.[0-9]{1,9})?s$")
# "Direct VPC egress settings. Currently only single network interface is supported." (Job.yaml)
MAX_NETWORK_INTERFACES = 1
# "Cloud Run does not allow you to mount a volume at /dev, /proc, or /sys, or on their subdirectories"
# (Cloud Run docs, "Configure Cloud Storage volume mounts for jobs"); "Must not contain ':'" (Job.yaml).
FORBIDDEN_MOUNT_ROOTS = ("/dev", "/proc", "/sys")
# A Kubernetes quantity, the form of resources.limits and emptyDir.sizeLimit (Job.yaml links the k8s type).
QUANTITY_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?(?:m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
# projects/{project}/locations/{location}/connectors/{connector} (Job.yaml: vpcAccess.connector).
VPC_CONNECTOR_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/connectors/[^/]+$")
# A user-managed service account (the module never lets a job fall back to the Compute Engine default one).
SERVICE_ACCOUNT_RE = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com$"
)
# A volume's name: a DNS label, as the container's name (Job.yaml: "specified as a DNS_LABEL").
VOLUME_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
