"""The job catalog: which Cloud Run jobs exist, read from one source shared with Terraform and the emulator.

Each job lives in ``jobs/<name>/job.yaml`` (see ``jobs/README.md`` for the format). Terraform builds one
``google_cloud_run_v2_job`` per file and outputs the resulting catalog as JSON (``job_catalog``); the
controller reads either form, and the emulator serves the same jobs, so what runs on a laptop is what
Terraform provisions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from controller import limits
from controller.durations import parse_duration, to_api_duration
from controller.files import read_regular_file

DEFAULT_JOBS_DIR = Path(__file__).resolve().parent.parent / "jobs"
# The most a catalog file may hold: a Terraform output of thousands of jobs is a few MiB; a job.yaml a few KiB.
MAX_CATALOG_BYTES = 64 * 2**20
MAX_JOB_FILE_BYTES = 2**20
LOCAL_REGISTRY = "local"


class CatalogError(Exception):
    """The catalog could not be read; the message says which file and what is wrong."""


# The enums the provider validates (magic-modules mmv1/products/cloudrunv2/Job.yaml): launchStage,
# vpcAccess.egress and volumes.emptyDir.medium.
LaunchStage = Literal["UNIMPLEMENTED", "PRELAUNCH", "EARLY_ACCESS", "ALPHA", "BETA", "GA", "DEPRECATED"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    cpu: str = "1"
    memory: str = "512Mi"

    @field_validator("cpu", "memory")
    @classmethod
    def _is_a_quantity(cls, value: str) -> str:
        if not limits.QUANTITY_RE.match(value):
            raise ValueError(f"{value!r} is not a quantity such as '1', '2' or '512Mi'")
        return value


class SecretRef(_Strict):
    """An env var whose value Cloud Run reads from Secret Manager; the value never passes through us."""

    secret: str
    version: str = "latest"


class NetworkInterface(_Strict):
    """Direct VPC egress: the network and/or subnetwork the tasks get an address in, and network tags."""

    network: str | None = None
    subnetwork: str | None = None
    tags: list[str] = []

    @model_validator(mode="after")
    def _names_a_network(self) -> NetworkInterface:
        if self.network is None and self.subnetwork is None:
            raise ValueError("a network interface names a network, a subnetwork or both")
        return self


class VpcAccess(_Strict):
    """How tasks reach a VPC: through a Serverless VPC Access connector or by direct VPC egress."""

    connector: str | None = None
    egress: Literal["ALL_TRAFFIC", "PRIVATE_RANGES_ONLY"] | None = None
    network_interfaces: list[NetworkInterface] = Field(default=[], max_length=limits.MAX_NETWORK_INTERFACES)

    @field_validator("connector")
    @classmethod
    def _connector_is_a_name(cls, connector: str | None) -> str | None:
        if connector is not None and not limits.VPC_CONNECTOR_RE.match(connector):
            raise ValueError("a connector is projects/PROJECT/locations/REGION/connectors/NAME")
        return connector

    @model_validator(mode="after")
    def _one_way_in(self) -> VpcAccess:
        if (self.connector is None) == (not self.network_interfaces):
            raise ValueError("give either connector or network_interfaces (direct VPC egress), not both or neither")
        return self


class GcsVolume(_Strict):
    """A Cloud Storage bucket mounted with Cloud Storage FUSE."""

    bucket: str = Field(min_length=3, max_length=222)
    read_only: bool = False
    mount_options: list[str] = []

    @field_validator("mount_options")
    @classmethod
    def _flags_without_dashes(cls, options: list[str]) -> list[str]:
        for option in options:
            if not option or option.startswith("-"):
                raise ValueError(f"mount option {option!r}: gcsfuse flags are written without leading dashes")
        return options


class EmptyDirVolume(_Strict):
    """An in-memory volume, counted against the container's memory limit."""

    medium: Literal["MEMORY"] = "MEMORY"
    size_limit: str | None = None

    @field_validator("size_limit")
    @classmethod
    def _is_a_quantity(cls, size: str | None) -> str | None:
        if size is not None and not limits.QUANTITY_RE.match(size):
            raise ValueError(f"size_limit {size!r} is not a quantity such as '128Mi'")
        return size


class Volume(_Strict):
    """A volume of the task: exactly one of ``gcs`` and ``empty_dir``."""

    name: str
    gcs: GcsVolume | None = None
    empty_dir: EmptyDirVolume | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_label(cls, name: str) -> str:
        if not limits.VOLUME_NAME_RE.match(name):
            raise ValueError("a volume name has 1-63 lowercase letters, digits or hyphens")
        return name

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Volume:
        if (self.gcs is None) == (self.empty_dir is None):
            raise ValueError(f"volume {self.name!r}: give exactly one of gcs and empty_dir")
        return self


class VolumeMount(_Strict):
    """Where a volume appears in the container."""

    name: str
    mount_path: str

    @field_validator("mount_path")
    @classmethod
    def _path_allowed(cls, path: str) -> str:
        if not path.startswith("/") or ":" in path:
            raise ValueError(f"mount_path {path!r} must be absolute and must not contain ':'")
        if any(path == root or path.startswith(root + "/") for root in limits.FORBIDDEN_MOUNT_ROOTS):
            raise ValueError(f"mount_path {path!r}: Cloud Run does not mount volumes under /dev, /proc or /sys")
        return path


class LocalRun(_Strict):
    """How the image's ENTRYPOINT runs on a host without containers (used by the emulator).

    ``{python}`` stands for the running interpreter (started with ``-S``: standard library only, as in the
    jobs' slim images); entries starting with ``./`` or ``../`` are paths relative to the job's folder.
    """

    entrypoint: list[str] = Field(min_length=1)


class JobExample(_Strict):
    """An invocation of the job and the outcome its author promises (checked by the tests)."""

    args: list[str] = []
    env: dict[str, str] = {}
    outcome: Literal["succeeded", "failed", "timed_out"] = "succeeded"
    exit_code: int | None = None
    output_contains: str | None = None
    # A task-timeout override for this run (RunJob's ``overrides.timeout``), so a timeout example can
    # show its outcome in seconds while the job keeps a timeout sensible for production.
    timeout: str | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout_is_a_duration(cls, timeout: str | None) -> str | None:
        if timeout is not None and not 0 < parse_duration(timeout) <= limits.MAX_TASK_TIMEOUT_SECONDS:
            raise ValueError(f"timeout must be between 1s and {limits.MAX_TASK_TIMEOUT_SECONDS}s")
        return timeout

    @model_validator(mode="after")
    def _outcome_consistent(self) -> JobExample:
        if self.outcome == "succeeded" and self.exit_code not in (None, 0):
            raise ValueError("a succeeded example exits with 0")
        if self.outcome == "failed" and self.exit_code == 0:
            raise ValueError("a failed example exits with a non-zero code")
        return self

    @property
    def timeout_seconds(self) -> float | None:
        return None if self.timeout is None else parse_duration(self.timeout)


class JobDefinition(_Strict):
    """One Cloud Run job, as provisioned by Terraform and served by the emulator."""

    name: str
    description: str
    image: str
    command: list[str] = []
    args: list[str] = []
    env: dict[str, str] = {}
    secret_env: dict[str, SecretRef] = {}
    resources: Resources = Resources()
    # Seconds with an "s" suffix, the only form the Terraform provider passes (see _timeout_in_range).
    timeout: str = "600s"
    max_retries: int = Field(default=3, ge=0, le=limits.MAX_RETRIES)
    task_count: int = Field(default=1, ge=1, le=limits.MAX_TASKS_PER_EXECUTION)
    parallelism: int = Field(default=0, ge=0)
    requires_args: bool = False
    packable: bool = False
    # Cloud Run settings Terraform passes on (GoogleCloudPlatform/terraform-google-cloud-run job-exec has
    # the same): preview features need a launch stage; null service_account means the module's jobs account.
    launch_stage: LaunchStage | None = None
    service_account: str | None = None
    vpc_access: VpcAccess | None = None
    volumes: list[Volume] = []
    volume_mounts: list[VolumeMount] = []
    local: LocalRun | None = None
    examples: list[JobExample] = []

    @field_validator("name")
    @classmethod
    def _name_is_a_job_name(cls, name: str) -> str:
        if not limits.JOB_NAME_RE.match(name):
            raise ValueError("a job name has 1-63 lowercase letters, digits or hyphens, starting with a letter")
        return name

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout_in_range(cls, timeout: object) -> str:
        """Seconds as the provider requires them; another duration form is refused with its conversion,
        because Terraform reads job.yaml itself and would send "15m" to a provider that rejects it."""
        if not isinstance(timeout, str | int | float) or isinstance(timeout, bool):
            raise ValueError(f"timeout must be a duration in seconds such as '600s', got {timeout!r}")
        seconds = parse_duration(timeout)
        if not 0 < seconds <= limits.MAX_TASK_TIMEOUT_SECONDS:
            raise ValueError(f"timeout must be between 1s and {limits.MAX_TASK_TIMEOUT_SECONDS}s")
        if not isinstance(timeout, str) or not limits.TASK_TIMEOUT_RE.match(timeout):
            raise ValueError(
                f"{timeout!r} is not in seconds: write {to_api_duration(seconds)!r} "
                "(the Terraform provider accepts only seconds with an 's' suffix)"
            )
        return timeout

    @field_validator("service_account")
    @classmethod
    def _service_account_is_user_managed(cls, email: str | None) -> str | None:
        if email is not None and not limits.SERVICE_ACCOUNT_RE.match(email):
            raise ValueError(
                f"service_account {email!r} must be a user-managed service account "
                "(NAME@PROJECT.iam.gserviceaccount.com), never the Compute Engine default one"
            )
        return email

    # Checks across fields are field validators reading the fields declared before them, so that one
    # look at a job.yaml reports every problem at once (a model validator runs only once fields are valid).
    @field_validator("parallelism")
    @classmethod
    def _parallelism_within_task_count(cls, parallelism: int, info: ValidationInfo) -> int:
        task_count = info.data.get("task_count")
        if task_count is not None and parallelism > task_count:
            raise ValueError(
                f"{parallelism} exceeds task_count ({task_count}); the provider requires parallelism <= "
                "task_count (0 means as many as Cloud Run allows)"
            )
        return parallelism

    @field_validator("volumes")
    @classmethod
    def _volume_names_unique(cls, volumes: list[Volume]) -> list[Volume]:
        names = [volume.name for volume in volumes]
        if duplicated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"names used twice: {', '.join(duplicated)}")
        return volumes

    @field_validator("volume_mounts")
    @classmethod
    def _mounts_name_volumes(cls, mounts: list[VolumeMount], info: ValidationInfo) -> list[VolumeMount]:
        problems = []
        if "volumes" in info.data:
            names = {volume.name for volume in info.data["volumes"]}
            problems += [
                f"{number}: no volume named {m.name!r}" for number, m in enumerate(mounts) if m.name not in names
            ]
        paths = [mount.mount_path for mount in mounts]
        if duplicated := sorted({path for path in paths if paths.count(path) > 1}):
            problems.append(f"paths used twice: {', '.join(duplicated)}")
        if problems:
            raise ValueError("; ".join(problems))
        return mounts

    @model_validator(mode="after")
    def _env_names_allowed(self) -> JobDefinition:
        for name in [*self.env, *self.secret_env, *(n for example in self.examples for n in example.env)]:
            if problem := limits.env_name_problem(name):
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _examples_runnable(self) -> JobDefinition:
        for number, example in enumerate(self.examples):
            if self.requires_args and not (example.args or self.args):
                raise ValueError(f"examples.{number}: the job requires args and the example gives none")
        return self

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)


class Catalog:
    """Jobs by name, with the project and region they live in when known."""

    def __init__(
        self,
        jobs: Mapping[str, JobDefinition],
        *,
        project: str | None = None,
        region: str | None = None,
        local_entrypoints: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.jobs = dict(jobs)
        self.project = project
        self.region = region
        # Where the Terraform module put the report bucket and its prefixes (None for a jobs/ folder).
        self.report_to: str | None = None
        self.manifests_to: str | None = None
        self.log_view: str | None = None  # the log view to query for job logs, when access is view-scoped
        self.jobs_service_account: str | None = None  # identity for the one-off jobs the controller creates
        self._local_entrypoints = dict(local_entrypoints or {})

    def __contains__(self, name: object) -> bool:
        return name in self.jobs

    def __getitem__(self, name: str) -> JobDefinition:
        return self.jobs[name]

    def __iter__(self) -> Iterator[JobDefinition]:
        return iter(self.jobs.values())

    def __len__(self) -> int:
        return len(self.jobs)

    def local_images(self) -> dict[str, list[str]]:
        """Image reference -> argv that stands in for the image's ENTRYPOINT on this host."""
        return {self.jobs[name].image: argv for name, argv in self._local_entrypoints.items()}

    @classmethod
    def from_jobs_dir(cls, jobs_dir: Path = DEFAULT_JOBS_DIR, *, registry: str = LOCAL_REGISTRY) -> Catalog:
        """Read every ``<jobs_dir>/*/job.yaml``; images are prefixed with ``registry``."""
        files = sorted(Path(jobs_dir).glob("*/job.yaml"))
        if not files:
            raise CatalogError(f"no job definitions (*/job.yaml) under {jobs_dir}")
        jobs: dict[str, JobDefinition] = {}
        entrypoints: dict[str, list[str]] = {}
        problems: list[str] = []
        for path in files:
            try:
                raw = yaml.safe_load(read_regular_file(path, MAX_JOB_FILE_BYTES).decode("utf-8"))
                job = JobDefinition.model_validate(raw)
            except (OSError, ValueError, yaml.YAMLError, ValidationError) as exc:
                problems.append(f"{path}: {_short(exc)}")
                continue
            if job.name != path.parent.name:
                problems.append(f"{path}: name {job.name!r} must match its folder {path.parent.name!r}")
                continue
            jobs[job.name] = job.model_copy(update={"image": f"{registry.rstrip('/')}/{job.image}"})
            if job.local is not None:
                entrypoints[job.name] = [part for arg in job.local.entrypoint for part in _local_arg(arg, path.parent)]
        if problems:
            raise CatalogError("invalid job definitions:\n  " + "\n  ".join(problems))
        return cls(jobs, local_entrypoints=entrypoints)

    @classmethod
    def from_terraform_output(cls, data: Mapping[str, Any]) -> Catalog:
        """Read the ``job_catalog`` output of the Terraform module (``terraform output -json``, whole or
        just that output's value)."""
        if "job_catalog" in data:
            data = data["job_catalog"]
        if "value" in data and "jobs" not in data:
            data = data["value"]
        try:
            specs = dict(data["jobs"].items())
        except (KeyError, TypeError, AttributeError) as exc:
            raise CatalogError(f"not a job catalog from the Terraform module: {_short(exc)}") from None
        jobs: dict[str, JobDefinition] = {}
        problems: list[str] = []
        for name, spec in specs.items():
            try:
                jobs[name] = JobDefinition.model_validate({"name": name, **spec})
            except (TypeError, ValidationError) as exc:
                problems.append(f"jobs.{name}: {_short(exc)}")
        if problems:
            raise CatalogError("invalid job catalog from the Terraform module:\n  " + "\n  ".join(problems))
        catalog = cls(jobs, project=data.get("project"), region=data.get("region"))
        if bucket := data.get("report_bucket"):
            catalog.report_to = f"gs://{bucket}/{str(data.get('report_prefix') or '').strip('/')}".rstrip("/")
            if data.get("manifest_prefix"):
                catalog.manifests_to = f"gs://{bucket}/{str(data['manifest_prefix']).strip('/')}"
        catalog.log_view = data.get("log_view") or None
        catalog.jobs_service_account = data.get("jobs_service_account") or None
        return catalog

    @classmethod
    def load(cls, source: str | Path | None = None) -> Catalog:
        """A catalog from a jobs folder, a Terraform output JSON file, or the bundled example jobs."""
        if source is None:
            return cls.from_jobs_dir()
        path = Path(source)
        if path.is_dir():
            return cls.from_jobs_dir(path)
        try:
            data = json.loads(read_regular_file(path, MAX_CATALOG_BYTES).decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"cannot read job catalog {path}: {_short(exc)}") from None
        return cls.from_terraform_output(data)


def _local_arg(arg: str, job_dir: Path) -> list[str]:
    if arg == "{python}":
        # -S: no site-packages, like the jobs' slim images (job code is standard library only); it also
        # cuts interpreter start-up several times over in a virtualenv full of .pth files.
        return [sys.executable, "-S"]
    if arg.startswith(("./", "../")):
        return [str((job_dir / arg).resolve())]
    return [arg]


def _short(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(_error_line(err["loc"], err["msg"]) for err in exc.errors())
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _error_line(loc: tuple[int | str, ...], message: str) -> str:
    """``field.path: message``; checks across fields already name their fields in the message."""
    message = message.removeprefix("Value error, ")
    return f"{'.'.join(str(part) for part in loc)}: {message}" if loc else message
