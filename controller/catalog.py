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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller import limits
from controller.durations import parse_duration

DEFAULT_JOBS_DIR = Path(__file__).resolve().parent.parent / "jobs"
LOCAL_REGISTRY = "local"


class CatalogError(Exception):
    """The catalog could not be read; the message says which file and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    cpu: str = "1"
    memory: str = "512Mi"


class SecretRef(_Strict):
    """An env var whose value Cloud Run reads from Secret Manager; the value never passes through us."""

    secret: str
    version: str = "latest"


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
    timeout: str = "600s"
    max_retries: int = Field(default=3, ge=0, le=limits.MAX_RETRIES)
    parallelism: int = Field(default=0, ge=0)
    task_count: int = Field(default=1, ge=1, le=limits.MAX_TASKS_PER_EXECUTION)
    requires_args: bool = False
    packable: bool = False
    local: LocalRun | None = None
    examples: list[JobExample] = []

    @field_validator("name")
    @classmethod
    def _name_is_a_job_name(cls, name: str) -> str:
        if not limits.JOB_NAME_RE.match(name):
            raise ValueError("a job name has 1-63 lowercase letters, digits or hyphens, starting with a letter")
        return name

    @field_validator("timeout")
    @classmethod
    def _timeout_in_range(cls, timeout: str) -> str:
        seconds = parse_duration(timeout)
        if not 0 < seconds <= limits.MAX_TASK_TIMEOUT_SECONDS:
            raise ValueError(f"timeout must be between 1s and {limits.MAX_TASK_TIMEOUT_SECONDS}s")
        return timeout

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
                raw = yaml.safe_load(path.read_text(encoding="utf-8"))
                job = JobDefinition.model_validate(raw)
            except (OSError, yaml.YAMLError, ValidationError) as exc:
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
            jobs = {name: JobDefinition.model_validate({"name": name, **spec}) for name, spec in data["jobs"].items()}
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise CatalogError(f"not a job catalog from the Terraform module: {_short(exc)}") from None
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
            data = json.loads(path.read_text(encoding="utf-8"))
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
        return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
