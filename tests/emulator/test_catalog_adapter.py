"""The catalog's job.yaml fields reach the emulator's jobs as Terraform would create them (read back through
run_v2, over REST): VPC access, volumes and their mounts, launch stage, a job's own service account."""

from __future__ import annotations

import shutil
from pathlib import Path

from google.api import launch_stage_pb2
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2

from controller.catalog import DEFAULT_JOBS_DIR, Catalog
from controller.emulator_jobs import catalog_emulator

EXTRA = """
launch_stage: BETA
service_account: hello-runner@demo-project.iam.gserviceaccount.com
vpc_access:
  egress: PRIVATE_RANGES_ONLY
  network_interfaces:
    - network: default
      subnetwork: jobs
      tags: [batch]
volumes:
  - name: results
    gcs: {bucket: demo-reports, mount_options: ["only-dir=reports"]}
  - name: scratch
    empty_dir: {size_limit: 128Mi}
volume_mounts:
  - {name: results, mount_path: /mnt/results}
  - {name: scratch, mount_path: /scratch}
"""


def test_job_yaml_networking_volumes_and_identity_reach_the_emulated_job(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    shutil.copytree(DEFAULT_JOBS_DIR / "hello", jobs / "hello")
    shutil.copytree(DEFAULT_JOBS_DIR / "runner", jobs / "runner")
    definition = jobs / "hello" / "job.yaml"
    definition.write_text(definition.read_text() + EXTRA)
    catalog = Catalog.from_jobs_dir(jobs)

    with catalog_emulator(catalog, project="p", region="us-central1") as emulator:
        client = run_v2.JobsClient(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=emulator.url),
        )
        job = client.get_job(name="projects/p/locations/us-central1/jobs/hello")

    task = job.template.template
    assert job.launch_stage == launch_stage_pb2.LaunchStage.Value("BETA")
    assert task.service_account == "hello-runner@demo-project.iam.gserviceaccount.com"
    assert task.vpc_access.egress == run_v2.VpcAccess.VpcEgress.PRIVATE_RANGES_ONLY
    [interface] = task.vpc_access.network_interfaces
    assert (interface.network, interface.subnetwork, list(interface.tags)) == ("default", "jobs", ["batch"])
    volumes = {volume.name: volume for volume in task.volumes}
    assert volumes["results"].gcs.bucket == "demo-reports"
    assert list(volumes["results"].gcs.mount_options) == ["only-dir=reports"]
    assert volumes["scratch"].empty_dir.size_limit == "128Mi"
    mounts = {mount.name: mount.mount_path for mount in task.containers[0].volume_mounts}
    assert mounts == {"results": "/mnt/results", "scratch": "/scratch"}
