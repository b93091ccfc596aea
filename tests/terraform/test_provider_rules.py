"""Every value the module sends to google_cloud_run_v2_job passes the provider's own validation, whatever
form job.yaml uses: the catalog refuses, with the file and field named, each form the provider would reject.

There is no terraform binary or provider here, so the provider's checks are written out below, each with
its source: GoogleCloudPlatform/magic-modules mmv1/products/cloudrunv2/Job.yaml (which generates the
resource's schema and validation) and hashicorp/terraform-provider-google
website/docs/r/cloud_run_v2_job.html.markdown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from test_terraform_jobs import JOBS_ACCOUNT, rendered_container, terraform_jobs
from tfparse import REPO, expression, locals_of, resources

from controller import limits
from controller.catalog import Catalog, CatalogError, JobDefinition

# Job.yaml, template.template.timeout: `validation: regex: '^[0-9]+(?:\.[0-9]{1,9})?s$'`.
PROVIDER_TIMEOUT = re.compile(r"^[0-9]+(?:\.[0-9]{1,9})?s$")
# Job.yaml enum_values of launchStage, template.template.vpcAccess.egress, volumes.emptyDir.medium.
PROVIDER_LAUNCH_STAGES = {"UNIMPLEMENTED", "PRELAUNCH", "EARLY_ACCESS", "ALPHA", "BETA", "GA", "DEPRECATED"}
PROVIDER_EGRESS = {"ALL_TRAFFIC", "PRIVATE_RANGES_ONLY"}
PROVIDER_MEDIA = {"MEMORY"}


def provider_problems(job: dict[str, Any]) -> list[str]:
    """What the provider (or the API, for the rules its docs state as "must") refuses in a rendered job."""
    problems = []
    if not isinstance(job["timeout"], str) or not PROVIDER_TIMEOUT.match(job["timeout"]):
        problems.append(f"timeout {job['timeout']!r}")  # Job.yaml validation regex
    if job["launch_stage"] is not None and job["launch_stage"] not in PROVIDER_LAUNCH_STAGES:
        problems.append(f"launch_stage {job['launch_stage']!r}")  # Job.yaml enum
    if job["parallelism"] > job["task_count"]:
        problems.append("parallelism > task_count")  # Job.yaml: "Must be <= taskCount."
    for access in job["vpc_access"]:
        if access["egress"] is not None and access["egress"] not in PROVIDER_EGRESS:
            problems.append(f"egress {access['egress']!r}")  # Job.yaml enum
        if len(access["network_interfaces"]) > 1:
            problems.append("network_interfaces")  # Job.yaml: "only single network interface is supported"
        for interface in access["network_interfaces"]:
            if interface["network"] is None and interface["subnetwork"] is None:
                problems.append("network_interfaces.0")  # "At least one of network or subnetwork"
    names = [volume["name"] for volume in job["volumes"]]
    for volume in job["volumes"]:
        if len(volume.get("gcs", [])) + len(volume.get("empty_dir", [])) != 1:
            problems.append(f"volume {volume['name']!r} sources")  # exactly one source per volume
        for empty in volume.get("empty_dir", []):
            if empty["medium"] not in PROVIDER_MEDIA:
                problems.append(f"medium {empty['medium']!r}")  # Job.yaml enum
    for mount in job["volume_mounts"]:
        if mount["name"] not in names:
            problems.append(f"mount {mount['name']!r}")  # volumeMounts.name: "must match the Name of a Volume"
        if ":" in mount["mount_path"]:
            problems.append(f"mount_path {mount['mount_path']!r}")  # mountPath: "Must not contain ':'"
    return problems


FULL_JOB = {
    "name": "full",
    "description": "every Cloud Run setting job.yaml offers",
    "image": "x/full:1",
    "timeout": "3600s",
    "task_count": 4,
    "parallelism": 2,
    "launch_stage": "BETA",
    "service_account": "etl-runner@my-project.iam.gserviceaccount.com",
    "vpc_access": {
        "network_interfaces": [{"network": "default", "subnetwork": "sub", "tags": ["a"]}],
        "egress": "ALL_TRAFFIC",
    },
    "volumes": [
        {"name": "results", "gcs": {"bucket": "my-bucket", "mount_options": ["only-dir=fanout/reports"]}},
        {"name": "scratch", "empty_dir": {"size_limit": "256Mi"}},
    ],
    "volume_mounts": [{"name": "results", "mount_path": "/results"}, {"name": "scratch", "mount_path": "/tmp/scratch"}],
}


def _write(tmp_path: Path, job: dict[str, Any]) -> Path:
    (tmp_path / job["name"]).mkdir()
    (tmp_path / job["name"] / "job.yaml").write_text(yaml.safe_dump(job))
    return tmp_path


@pytest.fixture(scope="module")
def job_resource(module) -> dict[str, Any]:
    return resources(module, "google_cloud_run_v2_job")["this"]


def test_the_shipped_jobs_pass_the_providers_validation(module, job_resource):
    for name, job in terraform_jobs(locals_of(module), REPO / "jobs", "r").items():
        assert provider_problems(rendered_container(job_resource, name, job)) == [], name


def test_vpc_volumes_launch_stage_and_service_account_are_passed_on(module, job_resource, tmp_path):
    _write(tmp_path, FULL_JOB)
    definition = Catalog.from_jobs_dir(tmp_path, registry="r")["full"]
    rendered = rendered_container(job_resource, "full", terraform_jobs(locals_of(module), tmp_path, "r")["full"])
    assert provider_problems(rendered) == []
    assert rendered["launch_stage"] == definition.launch_stage == "BETA"
    assert rendered["service_account"] == definition.service_account
    assert rendered["vpc_access"] == [
        {
            "connector": None,
            "egress": "ALL_TRAFFIC",
            "network_interfaces": [{"network": "default", "subnetwork": "sub", "tags": ["a"]}],
        }
    ]
    assert rendered["volumes"] == [
        {
            "name": "results",
            "gcs": [{"bucket": "my-bucket", "read_only": False, "mount_options": ["only-dir=fanout/reports"]}],
            "empty_dir": [],
        },
        {"name": "scratch", "gcs": [], "empty_dir": [{"medium": "MEMORY", "size_limit": "256Mi"}]},
    ]
    assert [(m.name, m.mount_path) for m in definition.volume_mounts] == [
        (m["name"], m["mount_path"]) for m in rendered["volume_mounts"]
    ]


def test_a_job_without_an_identity_of_its_own_runs_as_the_jobs_account(module, job_resource):
    job = terraform_jobs(locals_of(module), REPO / "jobs", "r")["hello"]
    assert rendered_container(job_resource, "hello", job)["service_account"] == JOBS_ACCOUNT


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"timeout": "15m"}, "timeout", "'900s'"),
        ({"timeout": "1h30m"}, "timeout", "'5400s'"),
        ({"timeout": 900}, "timeout", "'900s'"),
        ({"task_count": 2, "parallelism": 5}, "parallelism", "exceeds task_count"),
        ({"launch_stage": "beta"}, "launch_stage", "Input should be"),
        (
            {"vpc_access": {"connector": "projects/p/locations/r/connectors/c", "egress": "ALL"}},
            "vpc_access.egress",
            "Input should be",
        ),
        (
            {"vpc_access": {"network_interfaces": [{"network": "a"}, {"network": "b"}]}},
            "vpc_access.network_interfaces",
            "at most 1",
        ),
        (
            {"vpc_access": {"network_interfaces": [{"tags": ["a"]}]}},
            "vpc_access.network_interfaces.0",
            "names a network",
        ),
        (
            {"volumes": [{"name": "v", "empty_dir": {"medium": "DISK"}}]},
            "volumes.0.empty_dir.medium",
            "Input should be",
        ),
        (
            {"volumes": [{"name": "v", "empty_dir": {}}], "volume_mounts": [{"name": "w", "mount_path": "/w"}]},
            "volume_mounts",
            "no volume named 'w'",
        ),
        (
            {"volumes": [{"name": "v", "empty_dir": {}}], "volume_mounts": [{"name": "v", "mount_path": "/a:b"}]},
            "volume_mounts.0.mount_path",
            "':'",
        ),
    ],
)
def test_values_the_provider_rejects_are_refused_by_the_catalog_naming_file_and_field(
    module, job_resource, tmp_path, fields, field, message
):
    job = {"name": "bad", "description": "x", "image": "x/bad:1", **fields}
    _write(tmp_path, job)
    rendered = rendered_container(job_resource, "bad", terraform_jobs(locals_of(module), tmp_path, "r")["bad"])
    assert provider_problems(rendered), "the case must be one the provider would reject"
    with pytest.raises(CatalogError) as raised:
        Catalog.from_jobs_dir(tmp_path)
    text = str(raised.value)
    assert f"{tmp_path / 'bad' / 'job.yaml'}: " in text and f"{field}: " in text and message in text, text


def test_the_catalog_reports_every_problem_of_a_file_at_once(tmp_path):
    _write(
        tmp_path, {"name": "bad", "description": "x", "image": "i", "timeout": "15m", "task_count": 1, "parallelism": 3}
    )
    with pytest.raises(CatalogError) as raised:
        Catalog.from_jobs_dir(tmp_path)
    assert "timeout: " in str(raised.value) and "parallelism: " in str(raised.value)


def test_the_catalog_and_the_module_state_the_providers_rules():
    assert limits.TASK_TIMEOUT_RE.pattern == PROVIDER_TIMEOUT.pattern
    assert set(get_args(JobDefinition.model_fields["launch_stage"].annotation.__args__[0])) == PROVIDER_LAUNCH_STAGES


def test_the_module_checks_the_providers_rules_itself(job_resource):
    conditions = {expression(p["condition"]) for p in job_resource["lifecycle"][0]["precondition"]}
    assert f'can(regex("{PROVIDER_TIMEOUT.pattern}", each.value.timeout))'.replace("\\", "\\\\") in conditions
    assert "each.value.parallelism <= each.value.task_count" in conditions
