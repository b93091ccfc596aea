"""Cloud Run's documented limits for jobs, shared by validation, planning and the emulator.

Sources: Cloud Run docs, "Quotas and limits" and "Container runtime contract" (jobs), read 2026-11;
"Configure CPU limits for jobs" and "Configure memory limits" (jobs), read 2026-12.
"""

from __future__ import annotations

import re

MAX_TASKS_PER_EXECUTION = 10_000
MAX_TASK_TIMEOUT_SECONDS = 168 * 3600  # 7 days
MAX_RETRIES = 10
MAX_ENV_VARS_PER_CONTAINER = 1000
# A region's name, as Cloud Run's locations read: "us-central1", "europe-west1", "northamerica-northeast2".
REGION_RE = re.compile(r"^[a-z]+(?:-[a-z]+)+[0-9]+$")
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


def image_problem(image: str) -> str | None:
    """Why Cloud Run would refuse this container image reference, or None (it names it; the registry checks)."""
    if not image or any(c.isspace() for c in image):
        return "image is a container image URL such as 'us-docker.pkg.dev/P/R/NAME:TAG', without spaces"
    return None


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
QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTOR = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}
# projects/{project}/locations/{location}/connectors/{connector} (Job.yaml: vpcAccess.connector).
VPC_CONNECTOR_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/connectors/[^/]+$")
# A user-managed service account (the module never lets a job fall back to the Compute Engine default one).
SERVICE_ACCOUNT_RE = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com$"
)
# A volume's name: a DNS label, as the container's name (Job.yaml: "specified as a DNS_LABEL").
VOLUME_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def quantity(text: str) -> float:
    """A Kubernetes quantity as a number: "1" -> 1, "500m" -> 0.5, "512Mi" -> 536870912."""
    match = QUANTITY_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a quantity such as '1', '500m' or '512Mi'")
    return float(match.group(1)) * _FACTOR[match.group(2)]


# vCPUs of a job's container: 0.08 to 1 in steps of 0.001, or a whole number from the docs' table above 1.
MIN_CPU = 0.08
CPUS_OVER_ONE = (2, 4, 6, 8)
# Memory of a job's container: jobs run in the second generation environment, whose minimum is 512 MiB.
MIN_MEMORY_BYTES = 512 * 2**20
MAX_MEMORY_BYTES = 32 * 2**30
# Memory over the size needs at least that many vCPUs (the memory page; the last two rows: the CPU page's
# rules under 1 vCPU), and vCPUs need at least that much memory (the CPU page's table).
_MEMORY_NEEDS_CPU = (
    (24 * 2**30, 8.0),
    (16 * 2**30, 6.0),
    (8 * 2**30, 4.0),
    (4 * 2**30, 2.0),
    (2**30, 1.0),
    (512 * 2**20, 0.5),
)
_CPU_NEEDS_MEMORY = ((6.0, 4 * 2**30), (4.0, 2 * 2**30))
CPU_RULE = "cpu is 0.08 to 1 vCPU (in steps of 0.001, such as '0.5' or '500m') or 2, 4, 6 or 8"
MEMORY_RULE = "memory is 512Mi to 32Gi (such as '512Mi', '2Gi')"


def cpu_problem(cpu: str) -> str | None:
    """Why Cloud Run would refuse this vCPU limit for a job, or None."""
    try:
        value = quantity(cpu)
    except ValueError:
        return f"{cpu!r} is not a CPU quantity: {CPU_RULE}"
    if value <= 1:
        if value >= MIN_CPU and abs(value * 1000 - round(value * 1000)) < 1e-6:
            return None
    elif value in CPUS_OVER_ONE:
        return None
    return f"{cpu!r} is not a CPU limit Cloud Run takes: {CPU_RULE}"


def memory_problem(memory: str) -> str | None:
    """Why Cloud Run would refuse this memory limit for a job, or None."""
    try:
        value = quantity(memory)
    except ValueError:
        return f"{memory!r} is not a memory quantity: {MEMORY_RULE}"
    if not MIN_MEMORY_BYTES <= value <= MAX_MEMORY_BYTES:
        return f"{memory!r} is not a memory limit Cloud Run takes: {MEMORY_RULE}"
    return None


def resources_problem(cpu: str, memory: str) -> str | None:
    """Why Cloud Run would refuse this pair of limits (each valid alone), or None."""
    vcpus, size = quantity(cpu), quantity(memory)
    for over, needs in _MEMORY_NEEDS_CPU:
        if size > over and vcpus < needs:
            return f"memory {memory!r} needs at least {needs:g} vCPU (cpu is {cpu!r})"
    for at_least, needs_bytes in _CPU_NEEDS_MEMORY:
        if vcpus >= at_least and size < needs_bytes:
            return f"cpu {cpu!r} needs at least {needs_bytes // 2**30}Gi of memory (memory is {memory!r})"
    return None
