"""The job catalog as the Cloud Run emulator's job seeds: each catalog entry as the v2 Job Terraform creates.

The one place where the controller and ``cloudrun_emulator`` meet; registered as the emulator's job source
(``cloudrun_emulator.job_sources`` entry point), so ``fanout emulator`` serves the repository's jobs.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from google.cloud import run_v2

from cloudrun_emulator import Emulator, JobSeed, JobSource
from controller.catalog import Catalog, CatalogError, JobDefinition, Volume, VpcAccess
from controller.plan import LOCAL_RESULTS_BUCKET

log = logging.getLogger(__name__)


def job_message(job: JobDefinition) -> run_v2.Job:
    """The v2 Job Terraform would create for a catalog entry."""
    env = [run_v2.EnvVar(name=k, value=v) for k, v in job.env.items()]
    env += [
        run_v2.EnvVar(
            name=k,
            value_source=run_v2.EnvVarSource(
                secret_key_ref=run_v2.SecretKeySelector(secret=ref.secret, version=ref.version)
            ),
        )
        for k, ref in job.secret_env.items()
    ]
    container = run_v2.Container(
        image=job.image,
        command=list(job.command),
        args=list(job.args),
        env=env,
        resources=run_v2.ResourceRequirements(limits={"cpu": job.resources.cpu, "memory": job.resources.memory}),
        volume_mounts=[run_v2.VolumeMount(name=m.name, mount_path=m.mount_path) for m in job.volume_mounts],
    )
    task = run_v2.TaskTemplate(
        containers=[container],
        max_retries=job.max_retries,
        timeout=timedelta(seconds=job.timeout_seconds),
        service_account=job.service_account or "",
        vpc_access=_vpc_access(job.vpc_access) if job.vpc_access else None,
        volumes=[_volume(volume) for volume in job.volumes],
    )
    return run_v2.Job(
        launch_stage=job.launch_stage or "LAUNCH_STAGE_UNSPECIFIED",
        template=run_v2.ExecutionTemplate(task_count=job.task_count, parallelism=job.parallelism, template=task),
    )


def _vpc_access(vpc: VpcAccess) -> run_v2.VpcAccess:
    return run_v2.VpcAccess(
        connector=vpc.connector or "",
        egress=vpc.egress or "VPC_EGRESS_UNSPECIFIED",
        network_interfaces=[
            run_v2.VpcAccess.NetworkInterface(
                network=interface.network or "", subnetwork=interface.subnetwork or "", tags=interface.tags
            )
            for interface in vpc.network_interfaces
        ],
    )


def _volume(volume: Volume) -> run_v2.Volume:
    if volume.gcs is not None:
        gcs = volume.gcs
        source = run_v2.GCSVolumeSource(bucket=gcs.bucket, read_only=gcs.read_only, mount_options=gcs.mount_options)
        return run_v2.Volume(name=volume.name, gcs=source)
    assert volume.empty_dir is not None  # a Volume has exactly one source
    empty_dir = run_v2.EmptyDirVolumeSource(medium="MEMORY", size_limit=volume.empty_dir.size_limit or "")
    return run_v2.Volume(name=volume.name, empty_dir=empty_dir)


def job_seeds(catalog: Catalog) -> list[JobSeed]:
    return [JobSeed(job.name, job_message(job)) for job in catalog]


def catalog_emulator(catalog: Catalog | None = None, **options: Any) -> Emulator:
    """An ``Emulator`` serving the catalog's jobs, with their images' local entrypoints."""
    if catalog is None:
        return Emulator(**options)
    local_images = {**catalog.local_images(), **(options.pop("local_images", None) or {})}
    return Emulator(job_seeds(catalog), local_images=local_images, **options)


def report_buckets(report_to: str) -> dict[str, str]:
    """The emulator's local buckets for a report destination: a local report folder stands for the bucket
    one-off jobs mount their results from (``controller.plan.LOCAL_RESULTS_BUCKET``)."""
    if report_to.startswith("gs://"):
        return {}
    return {LOCAL_RESULTS_BUCKET: str(Path(report_to).expanduser().resolve())}


def emulator_buckets(url: str) -> dict[str, str]:
    """The buckets the emulator at ``url`` maps to local folders (``GET /_emulator/buckets``); none when it
    does not answer that (another emulator, or Cloud Run itself)."""
    try:
        response = requests.get(f"{url.rstrip('/')}/_emulator/buckets", timeout=10)
        found = response.json().get("localBuckets", {}) if response.ok else {}
    except (requests.RequestException, ValueError, AttributeError):
        return {}
    return {str(bucket): str(folder) for bucket, folder in found.items()} if isinstance(found, dict) else {}


def job_source(jobs_dir: Path | None) -> JobSource:
    """The emulator's job source: the catalog in ``jobs_dir`` (default: the repository's ``jobs/``).

    A default folder without a usable catalog starts the emulator empty; a folder given explicitly must hold
    a valid catalog (an empty one is fine).
    """
    try:
        catalog = Catalog.from_jobs_dir(jobs_dir) if jobs_dir is not None else Catalog.from_jobs_dir()
    except CatalogError as exc:
        if jobs_dir is not None and "no job definitions" not in str(exc):
            raise ValueError(str(exc)) from None
        log.info("no job catalog loaded: %s", str(exc).splitlines()[0])
        return JobSource("fanout catalog")
    return JobSource("fanout catalog", job_seeds(catalog), catalog.local_images())
