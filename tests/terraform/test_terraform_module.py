"""The module's shape: pinned versions, described and validated variables, least-privilege IAM, the
bucket's protections, the example root, and an output the controller reads."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tfparse import REPO, TERRAFORM, expression, load_dir, locals_of, resources, variables_of

from controller.catalog import Catalog, CatalogError

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
    # 7.31.0 is the lowest release the module plans against (test_terraform_cli.py shows 6.50.0 cannot).
    assert google == {"source": "hashicorp/google", "version": "~> 7.31"}


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
        ("spec_prefix", ["fanout/specs/", "specs/"], ["/specs/", "specs", "a//b/", ""]),
        ("extra_secret_ids", ["api-token", "projects/other/secrets/db_password"], ["a/b", "projects/p/token", ""]),
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
        "google_kms_crypto_key_iam_member",
    ):
        for name, grant in resources(module, kind).items():
            found[f"{kind}.{name}"] = grant["role"]
    return found


def test_no_grant_is_broader_than_needed(module):
    roles = _roles(module)
    assert roles["google_service_account_iam_member.controller_acts_as_jobs"] == "roles/iam.serviceAccountUser"
    acts_as = resources(module, "google_service_account_iam_member")["controller_acts_as_jobs"]
    assert expression(acts_as["count"]) == "var.allow_one_off_jobs ? 1 : 0"
    assert expression(acts_as["service_account_id"]) == "google_service_account.jobs.name"
    assert not {role for name, role in roles.items() if "acts_as" not in name} & TOO_BROAD
    project_grants = {name: role for name, role in roles.items() if name.startswith("google_project_iam_member")}
    # Two opt-ins, both off by default: the Logs Viewer fallback, and the one-off jobs' custom role.
    assert project_grants == {
        "google_project_iam_member.controller_logs_project": "roles/logging.viewer",
        "google_project_iam_member.controller_one_off_jobs": "${google_project_iam_custom_role.one_off_jobs[0].name}",
    }
    members = resources(module, "google_project_iam_member")
    assert expression(members["controller_logs_project"]["count"]) == 'var.log_access == "project" ? 1 : 0'
    assert expression(members["controller_one_off_jobs"]["count"]) == "var.allow_one_off_jobs ? 1 : 0"
    assert variables_of(module)["log_access"]["default"] == "view"
    assert variables_of(module)["allow_one_off_jobs"]["default"] is False


def test_nothing_waits_on_run_job_operations_at_project_level(module):
    """RunJob answers with the execution in its metadata: no standing run.operations.get grant."""
    custom = resources(module, "google_project_iam_custom_role")
    assert "operations_reader" not in custom
    holders = {name for name, role in custom.items() if "run.operations.get" in role["permissions"]}
    assert holders == {"one_off_jobs"}  # CreateJob's operation is waited on, and only for one-off jobs
    assert expression(custom["one_off_jobs"]["count"]) == "var.allow_one_off_jobs ? 1 : 0"


def test_one_off_jobs_get_only_the_calls_they_need(module):
    permissions = set(resources(module, "google_project_iam_custom_role")["one_off_jobs"]["permissions"])
    assert permissions == {
        "run.jobs.create",
        "run.jobs.get",
        "run.jobs.delete",
        "run.jobs.run",
        "run.jobs.runWithOverrides",
        "run.executions.get",
        "run.executions.list",
        "run.executions.cancel",
        "run.tasks.list",
        "run.operations.get",
    }
    # What roles/run.developer added: editing jobs, their IAM, services and worker pools.
    assert not {p for p in permissions if p.endswith((".update", ".setIamPolicy")) or "services" in p}
    description = variables_of(module)["allow_one_off_jobs"]["description"]
    assert "custom role" in description and "run.developer" not in description
    readme = (TERRAFORM / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `allow_one_off_jobs` |")]
    assert "custom role" in row and "run.developer" not in row


def test_controller_runs_and_reads_each_job(module):
    grants = resources(module, "google_cloud_run_v2_job_iam_member")
    assert {g["role"] for g in grants.values()} == {
        "roles/run.jobsExecutorWithOverrides",
        "${google_project_iam_custom_role.job_reader.name}",
    }
    assert all(expression(g["member"]) == "local.controller_member" for g in grants.values())
    # Not roles/run.viewer: run.jobs.get, run.tasks.get and the IAM policy reads are never called.
    reader = resources(module, "google_project_iam_custom_role")["job_reader"]
    assert set(reader["permissions"]) == {"run.executions.get", "run.executions.list", "run.tasks.list"}


OBJECT_PERMISSIONS_NEVER_USED = {
    "storage.folders",
    "storage.managedFolders",
    "storage.multipartUploads",
    "storage.objects.move",
}


def test_bucket_access_is_object_calls_only_under_prefixes(module):
    grants = resources(module, "google_storage_bucket_iam_member")
    assert set(grants) == {
        "controller_objects",
        "controller_specs",
        "controller_bucket_metadata",
        "jobs_manifests",
        "jobs_results",
    }
    assert not {g["role"] for g in grants.values()} & {"roles/storage.objectUser", "roles/storage.objectViewer"}
    custom = resources(module, "google_project_iam_custom_role")
    for name in ("controller_objects", "object_reader", "result_writer"):
        assert not {
            p for p in custom[name]["permissions"] for never in OBJECT_PERMISSIONS_NEVER_USED if p.startswith(never)
        }
    assert custom["result_writer"]["permissions"] == [
        "storage.objects.create",
        "storage.objects.delete",  # a retried one-off attempt replaces its file in the results volume
        "storage.objects.get",
        "storage.objects.list",
    ]
    controller = grants["controller_objects"]["condition"][0]["expression"]
    assert "var.report_prefix" in controller and "var.manifest_prefix" in controller
    assert "var.spec_prefix" in grants["controller_specs"]["condition"][0]["expression"]
    manifests = grants["jobs_manifests"]["condition"][0]["expression"]
    assert "var.manifest_prefix" in manifests and "var.report_prefix" not in manifests
    assert expression(grants["jobs_results"]["condition"][0]["expression"]) is None  # one string, built in locals
    assert "local.results_condition" in grants["jobs_results"]["condition"][0]["expression"]


def test_results_condition_admits_only_a_batchs_results_folder(module):
    """IAM Conditions offer startsWith/endsWith/extract on resource.name; extract() of "<prefix>{batch}/results/"
    is empty unless the object is in some batch's results/ folder."""
    condition = expression(locals_of(module)["results_condition"]) or locals_of(module)["results_condition"]
    assert "resource.name.startsWith(" in condition and ".extract(" in condition and "{batch}/results/" in condition
    listing = locals_of(module)["results_list_condition"]
    assert (
        "storage.googleapis.com/objectListPrefix" in listing
        and '.extract(\\"${var.report_prefix}{batch}/results/\\")' in listing
    )


def test_secret_access_follows_each_jobs_identity_and_extra_secrets(module):
    module_locals = locals_of(module)
    assert "var.extra_secret_ids" in module_locals["secret_grants"]
    assert "local.job_identity[name]" in module_locals["secret_grants"]
    grant = resources(module, "google_secret_manager_secret_iam_member")["jobs_secrets"]
    assert expression(grant["member"]) == "local.identity_members[each.value.identity]"
    assert variables_of(module)["extra_secret_ids"]["default"] == []


def test_the_storage_agent_may_use_the_buckets_kms_key(module):
    grant = resources(module, "google_kms_crypto_key_iam_member")["storage_agent_uses_key"]
    assert expression(grant["crypto_key_id"]) == "var.kms_key_name"
    assert grant["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert "google_storage_project_service_account.storage_agent" in grant["member"]
    bucket = resources(module, "google_storage_bucket")["reports"]
    assert "${google_kms_crypto_key_iam_member.storage_agent_uses_key}" in bucket["depends_on"]


def test_jobs_are_created_after_their_secret_grants(module):
    job = resources(module, "google_cloud_run_v2_job")["this"]
    assert job["depends_on"] == [
        "${google_secret_manager_secret_iam_member.jobs_secrets}",
        "${google_artifact_registry_repository_iam_member.run_agent_pulls_images}",
    ]


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


def test_age_rules_delete_only_live_versions_so_archived_ones_stay_recoverable(module):
    """An age condition without with_state matches archived versions as well (their age counts from creation),
    which would remove a report's noncurrent copy the day the report expires."""
    bucket = resources(module, "google_storage_bucket")["reports"]
    for rule in bucket["lifecycle_rule"]:
        condition = rule["condition"][0]
        if "age" in condition:
            assert condition.get("with_state") == "LIVE", condition
        else:
            assert condition.get("with_state") == "ARCHIVED" and "days_since_noncurrent_time" in condition


def test_jobs_never_run_as_the_default_compute_account(module):
    task = resources(module, "google_cloud_run_v2_job")["this"]["template"][0]["template"][0]
    assert "google_service_account.jobs.email" in (expression(task["service_account"]) or "")


def test_the_example_passes_deletion_protection_through_so_destroy_can_work():
    example = load_dir(TERRAFORM / "examples" / "basic")
    (modules,) = example["module"]
    assert expression(modules["fanout"]["deletion_protection"]) == "var.deletion_protection"
    assert variables_of(example)["deletion_protection"]["type"] == "bool"
    readme = (TERRAFORM / "README.md").read_text(encoding="utf-8")
    assert "deletion_protection = false" in readme and "Removing a job" in readme


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
    assert set(value) == set(expected)


def test_every_top_level_catalog_field_is_read_by_the_controller(module):
    """An output field nothing reads is a promise nobody keeps (controller_service_account and spec_prefix
    were: the controller's identity has its own output, and specs are read by name)."""
    outputs = {name: body for block in module["output"] for name, body in block.items()}
    source = (REPO / "controller" / "catalog.py").read_text(encoding="utf-8")
    reader = source[source.index("def from_terraform_output") : source.index("def load(")]
    read = set(re.findall(r"""data(?:\.get\(|\[)["'](\w+)["']""", reader))
    assert set(outputs["job_catalog"]["value"]) == read - {"job_catalog", "value"}  # those two unwrap the output


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


def test_a_terraform_output_with_bad_jobs_names_every_job_and_field():
    value = json.loads((REPO / "tests/terraform/job_catalog_output.json").read_text())
    value["jobs"]["hello"]["timeout"] = "15m"
    value["jobs"]["flaky"]["parallelism"] = 4
    with pytest.raises(CatalogError) as raised:
        Catalog.from_terraform_output(value)
    assert "jobs.hello: timeout: " in str(raised.value) and "'900s'" in str(raised.value)
    assert "jobs.flaky: parallelism: 4 exceeds task_count (1)" in str(raised.value)


def test_outputs_give_iam_member_strings_for_grants_made_elsewhere(module):
    outputs = {name: body for block in module["output"] for name, body in block.items()}
    assert expression(outputs["controller_member"]["value"]) == "local.controller_member"
    assert expression(outputs["jobs_member"]["value"]) == "local.jobs_member"
    job_members = expression(outputs["job_members"]["value"]) or ""
    assert "local.job_identity" in job_members and "local.identity_members[identity]" in job_members
    module_locals = locals_of(module)
    assert module_locals["controller_member"] == '"serviceAccount:${google_service_account.controller.email}"'
    assert module_locals["jobs_member"] == '"serviceAccount:${google_service_account.jobs.email}"'
