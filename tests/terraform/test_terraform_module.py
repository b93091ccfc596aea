"""The module's shape: pinned versions, described and validated variables, least-privilege IAM, the
bucket's protections, the example root, and an output the controller reads."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tfparse import REPO, TERRAFORM, expression, load_dir, resources, variables_of

from controller.catalog import Catalog

# Roles that would let the controller change jobs, act as other identities or own the bucket.
TOO_BROAD = {
    "roles/owner",
    "roles/editor",
    "roles/run.admin",
    "roles/run.developer",
    "roles/run.invoker",
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountTokenCreator",
    "roles/storage.admin",
    "roles/storage.objectAdmin",
}


def test_versions_pin_terraform_and_the_google_provider(module):
    (settings,) = module["terraform"]
    assert settings["required_version"] == ">= 1.5.0"
    google = settings["required_providers"][0]["google"]
    assert google == {"source": "hashicorp/google", "version": "~> 7.0"}


def test_every_variable_has_a_description_a_type_and_validation_unless_boolean(module):
    variables = variables_of(module)
    assert {"project_id", "region", "image_registry", "jobs_dir", "report_bucket_name", "report_prefix"} <= set(
        variables
    )
    for name, variable in variables.items():
        assert variable.get("description"), name
        assert variable.get("type"), name
        if variable["type"] != "bool" and name != "access_log_bucket":
            assert variable.get("validation"), f"variable {name} has no validation"


def _regex(module: dict[str, list[Any]], variable: str) -> re.Pattern[str]:
    condition = expression(variables_of(module)[variable]["validation"][0]["condition"]) or ""
    match = re.search(r'regex\("((?:[^"\\]|\\.)*)"', condition)
    assert match, condition
    return re.compile(match.group(1).encode().decode("unicode_escape"))


@pytest.mark.parametrize(
    ("variable", "good", "bad"),
    [
        ("project_id", ["my-project", "fanout-prod-123"], ["123456789012", "My-Project", "ab", "proj-"]),
        ("region", ["europe-west1", "us-central1", "asia-northeast3"], ["europe-west", "EU", "us-central1-a"]),
        (
            "image_registry",
            ["europe-west1-docker.pkg.dev/my-project/fanout-jobs", "localhost:5000", "ghcr.io/org"],
            ["https://ghcr.io/org", "ghcr.io/org/", "Ghcr.io/Org"],
        ),
        ("report_prefix", ["fanout/reports/", "reports/"], ["/reports/", "reports", "a//b/", ""]),
        ("name_prefix", ["fanout", "fo-1"], ["f", "Fanout", "fanout-", "a-very-long-prefix-xyz"]),
    ],
)
def test_variable_validation_accepts_and_rejects(module, variable, good, bad):
    pattern = _regex(module, variable)
    for value in good:
        assert pattern.fullmatch(value), f"{variable} should accept {value!r}"
    for value in bad:
        assert not pattern.fullmatch(value), f"{variable} should reject {value!r}"


def _roles(module: dict[str, list[Any]]) -> dict[str, str]:
    found = {}
    for kind in (
        "google_project_iam_member",
        "google_cloud_run_v2_job_iam_member",
        "google_storage_bucket_iam_member",
        "google_logging_log_view_iam_member",
        "google_secret_manager_secret_iam_member",
        "google_service_account_iam_member",
    ):
        for name, grant in resources(module, kind).items():
            found[f"{kind}.{name}"] = grant["role"]
    return found


# Broad roles that exist only behind allow_one_off_jobs (default false): creating a job cannot be scoped.
OPT_IN_ONE_OFF = {
    "google_project_iam_member.controller_one_off_jobs": "roles/run.developer",
    "google_service_account_iam_member.controller_acts_as_jobs": "roles/iam.serviceAccountUser",
}


def test_no_grant_is_broader_than_needed(module):
    roles = _roles(module)
    assert {name: roles[name] for name in OPT_IN_ONE_OFF} == OPT_IN_ONE_OFF
    for name in OPT_IN_ONE_OFF:
        kind, resource = name.split(".")
        assert expression(resources(module, kind)[resource]["count"]) == "var.allow_one_off_jobs ? 1 : 0"
    assert not {role for name, role in roles.items() if name not in OPT_IN_ONE_OFF} & TOO_BROAD
    project_grants = {name: role for name, role in roles.items() if name.startswith("google_project_iam_member")}
    # Only the one-permission operations role, and two opt-ins that are off by default: the Logs Viewer
    # fallback, and Cloud Run Developer for controllers that create one-off jobs.
    assert project_grants == {
        "google_project_iam_member.controller_operations": ("${google_project_iam_custom_role.operations_reader.name}"),
        "google_project_iam_member.controller_logs_project": "roles/logging.viewer",
        "google_project_iam_member.controller_one_off_jobs": "roles/run.developer",
    }
    members = resources(module, "google_project_iam_member")
    assert expression(members["controller_logs_project"]["count"]) == 'var.log_access == "project" ? 1 : 0'
    assert expression(members["controller_one_off_jobs"]["count"]) == "var.allow_one_off_jobs ? 1 : 0"
    assert variables_of(module)["log_access"]["default"] == "view"
    assert variables_of(module)["allow_one_off_jobs"]["default"] is False
    custom = resources(module, "google_project_iam_custom_role")
    assert custom["operations_reader"]["permissions"] == ["run.operations.get"]
    assert custom["bucket_metadata_reader"]["permissions"] == ["storage.buckets.get"]


def test_controller_runs_and_reads_each_job(module):
    grants = resources(module, "google_cloud_run_v2_job_iam_member")
    assert {g["role"] for g in grants.values()} == {"roles/run.jobsExecutorWithOverrides", "roles/run.viewer"}
    assert all(expression(g["member"]) == "local.controller_member" for g in grants.values())


def test_bucket_access_is_limited_to_prefixes(module):
    grants = resources(module, "google_storage_bucket_iam_member")
    assert set(grants) == {"controller_objects", "controller_bucket_metadata", "jobs_manifests"}
    metadata = expression(grants["controller_bucket_metadata"]["role"])
    assert metadata == "google_project_iam_custom_role.bucket_metadata_reader.name"
    controller, jobs = grants["controller_objects"], grants["jobs_manifests"]
    assert controller["role"] == "roles/storage.objectUser"
    assert "var.report_prefix" in controller["condition"][0]["expression"]
    assert "var.manifest_prefix" in controller["condition"][0]["expression"]
    assert jobs["role"] == "roles/storage.objectViewer"
    assert "var.manifest_prefix" in jobs["condition"][0]["expression"]
    assert "var.report_prefix" not in jobs["condition"][0]["expression"]


def test_the_bucket_is_private_versioned_and_expires_objects(module):
    bucket = resources(module, "google_storage_bucket")["reports"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["versioning"][0]["enabled"] is True
    assert bucket["force_destroy"] is False
    conditions = [rule["condition"][0] for rule in bucket["lifecycle_rule"]]
    assert any("days_since_noncurrent_time" in condition for condition in conditions)
    assert {expression(c["matches_prefix"][0]) for c in conditions if "matches_prefix" in c} == {
        "var.report_prefix",
        "var.manifest_prefix",
    }


def test_jobs_never_run_as_the_default_compute_account(module):
    task = resources(module, "google_cloud_run_v2_job")["this"]["template"][0]["template"][0]
    assert expression(task["service_account"]) == "google_service_account.jobs.email"


def test_the_example_root_uses_the_module_and_outputs_the_catalog():
    example = load_dir(TERRAFORM / "examples" / "basic")
    (modules,) = example["module"]
    assert modules["fanout"]["source"] == "../.."
    assert "jobs_dir" not in modules["fanout"], "the example must read the repository's own jobs/"
    outputs = {name: body for block in example["output"] for name, body in block.items()}
    assert expression(outputs["job_catalog"]["value"]) == "module.fanout.job_catalog"
    assert (TERRAFORM / "examples" / "basic" / "terraform.tfvars.example").is_file()


def test_the_catalog_output_lists_every_field_the_controller_reads(module):
    outputs = {name: body for block in module["output"] for name, body in block.items()}
    value = outputs["job_catalog"]["value"]
    assert expression(value["project"]) == "var.project_id"
    assert expression(value["region"]) == "var.region"
    job_fields = set(re.findall(r"(\w+) = local\.jobs\[name\]\.(\w+)", expression(value["jobs"]) or ""))
    assert {a for a, b in job_fields if a == b} == {a for a, _ in job_fields}
    expected = json.loads((REPO / "tests/terraform/job_catalog_output.json").read_text())
    assert {field for field, _ in job_fields} == set(next(iter(expected["jobs"].values())))


@pytest.mark.parametrize("wrap", ["value", "terraform output -json", "whole output"])
def test_a_terraform_output_reads_as_the_same_catalog_as_the_jobs_folder(wrap):
    # Hand-written: what `terraform output -json job_catalog` prints for the shipped jobs with
    # image_registry = europe-west1-docker.pkg.dev/my-project/fanout-jobs (Terraform sorts object keys).
    value = json.loads((REPO / "tests/terraform/job_catalog_output.json").read_text())
    data = {
        "value": value,
        "terraform output -json": {"job_catalog": {"sensitive": False, "type": "object", "value": value}},
        "whole output": {"job_catalog": {"value": value}, "report_bucket": {"value": "b"}},
    }[wrap]

    from_terraform = Catalog.from_terraform_output(data)
    from_folder = Catalog.from_jobs_dir(registry="europe-west1-docker.pkg.dev/my-project/fanout-jobs")

    assert from_terraform.project == "my-project"
    assert from_terraform.region == "europe-west1"
    assert set(from_terraform.jobs) == set(from_folder.jobs)
    for name, job in from_folder.jobs.items():
        assert from_terraform[name] == job.model_copy(update={"local": None, "examples": []}), name
