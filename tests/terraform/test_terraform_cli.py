"""terraform/ checked by terraform itself: fmt, then validate, plan, apply and destroy of the module and its
example against the Google provider's own schema (tfrun.py, fakegoogle.py), at the lowest and the highest
provider version versions.tf allows. Only the binary is needed; CI has it at /usr/local/bin/terraform."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml
from google_schema import PACKAGES
from test_provider_rules import FULL_JOB
from tfparse import REPO, TERRAFORM, load_dir
from tfrun import TERRAFORM_BIN, Workspace, workspace

from controller.catalog import Catalog
from controller.spec import load_batch

pytestmark = pytest.mark.skipif(
    TERRAFORM_BIN is None, reason="no terraform binary on PATH (CI has /usr/local/bin/terraform)"
)

EXAMPLE = "terraform/examples/basic"
EXAMPLE_VARS = [
    "-var=project_id=my-project",
    "-var=image_registry=europe-west1-docker.pkg.dev/my-project/fanout-jobs",
    "-var=report_bucket_name=my-project-fanout-reports",
]


def _constraint() -> str:
    (settings,) = load_dir(TERRAFORM)["terraform"]
    return settings["required_providers"][0]["google"]["version"]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def allows(constraint: str, version: str) -> bool:
    """Terraform's version constraint syntax, for the operators versions.tf may use."""
    for term in constraint.split(","):
        op, bound = re.fullmatch(r"\s*(~>|>=|<=|!=|>|<|=)?\s*([0-9.]+)\s*", term).groups()  # type: ignore[union-attr]
        have, want = _key(version), _key(bound)
        if op == "~>":
            upper = (*want[: len(want) - 2], want[len(want) - 2] + 1) if len(want) > 1 else (want[0] + 1,)
            ok = have >= want and have[: len(upper)] < upper
        else:
            ok = {
                None: have == want,
                "=": have == want,
                "!=": have != want,
                ">": have > want,
                ">=": have >= want,
                "<": have < want,
                "<=": have <= want,
            }[op]
        if not ok:
            return False
    return True


ALLOWED = sorted((v for v in PACKAGES if allows(_constraint(), v)), key=_key)
BOUNDS = sorted({ALLOWED[0], ALLOWED[-1]}, key=_key) if ALLOWED else []


def _everything_on(ws: Workspace) -> list[str]:
    """The module as a root with every option set, and a jobs_dir with a job using every job.yaml field."""
    jobs = ws.root / "my-jobs"
    for shipped in (REPO / "jobs").glob("*/job.yaml"):
        (jobs / shipped.parent.name).mkdir(parents=True)
        (jobs / shipped.parent.name / "job.yaml").write_text(shipped.read_text())
    full = {**FULL_JOB, "secret_env": {"API_TOKEN": {"secret": "api-token", "version": "3"}}}
    (jobs / "full").mkdir()
    (jobs / "full" / "job.yaml").write_text(yaml.safe_dump(full))
    (ws.root / "terraform" / "all.tfvars").write_text(
        "\n".join(
            [
                'project_id = "my-project"',
                'region = "europe-west1"',
                'image_registry = "europe-west1-docker.pkg.dev/images-project/fanout-jobs"',
                "grant_registry_access = true",
                f'jobs_dir = "{jobs}"',
                'report_bucket_name = "my-project-fanout-reports"',
                'bucket_location = "EU"',  # a multi-region: its Cloud KMS location is "europe"
                'kms_key_name = "projects/keys/locations/europe/keyRings/r/cryptoKeys/k"',
                'access_log_bucket = "my-access-logs"',
                'log_access = "project"',
                "allow_one_off_jobs = true",
                'extra_secret_ids = ["db-password", "projects/other/secrets/shared"]',
                "soft_delete_retention_days = 7",
                "deletion_protection = false",
                'labels = { team = "data" }',
            ]
        )
        + "\n"
    )
    return ["-var-file=all.tfvars"]


def _plan(ws: Workspace, cwd: str, args: list[str]) -> dict[str, Any]:
    ws.run("init", "-backend=false", "-no-color", cwd=cwd)
    ws.run("validate", "-no-color", cwd=cwd)
    ws.run("plan", "-no-color", "-out=plan.bin", *args, cwd=cwd)
    return json.loads(ws.run("show", "-json", "plan.bin", cwd=cwd).stdout)


def _created(plan: dict[str, Any]) -> list[str]:
    return sorted(c["address"] for c in plan["resource_changes"] if c["change"]["actions"] == ["create"])


def _after(plan: dict[str, Any], address: str) -> dict[str, Any]:
    (change,) = [c for c in plan["resource_changes"] if c["address"] == address]
    return change["change"]["after"]


def readme_commands() -> list[str]:
    """The three commands of terraform/README.md's "Apply, run a batch, tear down", in order."""
    readme = (TERRAFORM / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Apply, run a batch, tear down") :]
    block = section[section.index("```sh\n") + 6 : section.index("```", section.index("```sh\n") + 6)]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def _terraform_steps(command: str) -> list[list[str]]:
    """The terraform invocations of one README command, without the -chdir that points at the example."""
    steps = []
    for part in command.split("&&"):
        words = shlex.split(part)
        assert words[:2] == ["terraform", f"-chdir={EXAMPLE}"], part
        steps.append(words[2:])
    return steps


def test_terraform_files_are_formatted():
    result = subprocess.run(
        [TERRAFORM_BIN or "terraform", "fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"terraform fmt -recursive terraform/ would change:\n{result.stdout}{result.stderr}"


@pytest.mark.slow(minutes=0.3)
def test_the_provider_pin_starts_at_the_lowest_version_that_plans(tmp_path):
    """The floor plans (test_validate_and_plan_...); the release below it, let past the pin, does not."""
    assert ALLOWED, f"no provider version the tests know of is allowed by {_constraint()!r}"
    assert _key(ALLOWED[-1])[0] == _key(ALLOWED[0])[0], "the pin spans a major version"
    # The pin's own floor is a release the suite plans against, not an earlier one nobody tried.
    (floor,) = re.findall(r"(?:~>|>=)\s*([0-9.]+)", _constraint())
    assert (*_key(floor), 0, 0)[:3] == _key(ALLOWED[0]), f"{_constraint()!r} allows releases before {ALLOWED[0]}"
    below = max((v for v in PACKAGES if _key(v) < _key(ALLOWED[0])), key=_key)
    assert not allows(_constraint(), below)
    ws = workspace(tmp_path, below)
    for folder in ("terraform", EXAMPLE):
        # An override file replaces the pin for this run only (Terraform merges *_override.tf last).
        (ws.root / folder / "pin_override.tf").write_text(
            'terraform {\n  required_providers {\n    google = {\n      source  = "hashicorp/google"\n'
            f'      version = "{below}"\n    }}\n  }}\n}}\n'
        )
    ws.run("init", "-backend=false", "-no-color", cwd=EXAMPLE)
    result = ws.run("validate", "-no-color", cwd=EXAMPLE, check=False)
    assert result.returncode == 1
    assert 'An argument named "mount_options" is not expected here' in result.stderr, result.stderr


@pytest.mark.slow(minutes=0.3)
@pytest.mark.parametrize("version", BOUNDS)
def test_validate_and_plan_the_example_and_every_option(tmp_path, version):
    example, off, full = (workspace(tmp_path / name, version) for name in ("example", "off", "full"))
    with ThreadPoolExecutor(3) as pool:
        planned_example = pool.submit(_plan, example, EXAMPLE, EXAMPLE_VARS)
        planned_off = pool.submit(_plan, off, "terraform", [*EXAMPLE_VARS, "-var=region=europe-west1"])
        planned_full = pool.submit(_plan, full, "terraform", _everything_on(full))
        example_plan, off_plan, full_plan = planned_example.result(), planned_off.result(), planned_full.result()

    created = _created(example_plan)
    assert len(created) == len(example_plan["resource_changes"])
    jobs = sorted(p.parent.name for p in (REPO / "jobs").glob("*/job.yaml"))
    assert [a for a in created if ".google_cloud_run_v2_job.this[" in a] == [
        f'module.fanout.google_cloud_run_v2_job.this["{j}"]' for j in jobs
    ]
    # The example turns one-off jobs on, so examples/mixed.yaml runs against what it creates.
    assert "module.fanout.google_project_iam_custom_role.one_off_jobs[0]" in created
    # Soft delete is off unless asked for: versioning already keeps deleted reports.
    bucket = _after(example_plan, "module.fanout.google_storage_bucket.reports")
    assert [p["retention_duration_seconds"] for p in bucket["soft_delete_policy"]] == [0]

    # The module with every option at its default: none of the opt-in resources.
    none = _created(off_plan)
    assert not [a for a in none if a.endswith("[0]") and "log_view" not in a], none
    assert {a.removeprefix("module.fanout.") for a in created} - set(none) == {
        "google_project_iam_custom_role.one_off_jobs[0]",
        "google_project_iam_member.controller_one_off_jobs[0]",
        "google_service_account_iam_member.controller_acts_as_jobs[0]",
    }

    every = _created(full_plan)
    for address in (
        'google_cloud_run_v2_job.this["full"]',
        "google_kms_crypto_key_iam_member.storage_agent_uses_key[0]",
        "google_project_iam_member.controller_logs_project[0]",
        "google_service_account_iam_member.controller_acts_as_jobs[0]",
        "google_artifact_registry_repository_iam_member.run_agent_pulls_images[0]",
        f'google_secret_manager_secret_iam_member.jobs_secrets["{FULL_JOB["service_account"]}/api-token"]',
        'google_secret_manager_secret_iam_member.jobs_secrets["jobs/db-password"]',
        "google_storage_bucket.reports",
    ):
        assert address in every, address
    assert len(every) > len(created)
    assert [
        p["retention_duration_seconds"]
        for p in _after(full_plan, "google_storage_bucket.reports")["soft_delete_policy"]
    ] == [7 * 86400]
    pull = _after(full_plan, "google_artifact_registry_repository_iam_member.run_agent_pulls_images[0]")
    assert (pull["project"], pull["location"], pull["repository"], pull["role"]) == (
        "images-project",
        "europe-west1",
        "fanout-jobs",
        "roles/artifactregistry.reader",
    )
    assert pull["member"].startswith("serviceAccount:service-")
    assert pull["member"].endswith("@serverless-robot-prod.iam.gserviceaccount.com")


@pytest.mark.slow(minutes=0.2)
def test_a_kms_key_outside_the_buckets_location_stops_the_plan(tmp_path):
    """Cloud Storage would refuse it at apply, after the service agent's grant on the key was made."""
    ws = workspace(tmp_path, BOUNDS[-1])
    key = "-var=kms_key_name=projects/keys/locations/us-east1/keyRings/r/cryptoKeys/k"
    ws.run("init", "-backend=false", "-no-color")
    result = ws.run("plan", "-no-color", *EXAMPLE_VARS, "-var=region=europe-west1", key, check=False)
    assert result.returncode == 1
    assert "kms_key_name must be a key in the bucket's location (europe-west1)" in result.stderr, result.stderr


@pytest.mark.slow(minutes=0.2)
def test_an_argument_the_provider_does_not_have_is_caught(tmp_path):
    ws = workspace(tmp_path, BOUNDS[-1])
    main = ws.root / "terraform" / "main.tf"
    text = main.read_text()
    text = text.replace('  storage_class               = "STANDARD"\n', '  storage_clas = "STANDARD"\n', 1)
    image = "        image = each.value.image\n"
    text = text.replace(image, image + '        imag  = "x"\n', 1)
    main.write_text(text)
    ws.run("init", "-backend=false", "-no-color", cwd=EXAMPLE)
    result = ws.run("validate", "-no-color", cwd=EXAMPLE, check=False)
    assert result.returncode == 1
    assert result.stderr.count("Unsupported argument") == 2, result.stderr
    assert 'An argument named "storage_clas" is not expected here' in result.stderr
    assert 'An argument named "imag" is not expected here' in result.stderr


@pytest.mark.slow(minutes=0.3)
def test_apply_then_destroy_leaves_nothing_and_a_protected_destroy_removes_nothing(tmp_path):
    ws = workspace(tmp_path, BOUNDS[-1])
    ws.run("init", "-backend=false", "-no-color", cwd=EXAMPLE)
    ws.run("apply", "-auto-approve", "-no-color", *EXAMPLE_VARS, cwd=EXAMPLE)
    created = ws.left()
    jobs = [o for o in created if o["type"] == "google_cloud_run_v2_job"]
    assert len(jobs) == len(list((REPO / "jobs").glob("*/job.yaml")))

    # The catalog as terraform prints it is the controller's, and examples/mixed.yaml (a one-off item
    # among them) validates against it, with the jobs' account for its one-off job.
    output = json.loads(ws.run("output", "-json", "job_catalog", cwd=EXAMPLE).stdout)
    catalog = Catalog.from_terraform_output(output)
    assert catalog.project == "my-project" and catalog.report_to == "gs://my-project-fanout-reports/fanout/reports"
    assert catalog.jobs_service_account and catalog.log_view
    batch = load_batch(REPO / "examples" / "mixed.yaml", catalog)
    assert {item.job for item in batch.items} == {"hello", "wordcount", "flaky", None}  # None: the one-off item

    # deletion_protection is on: the destroy is refused before anything is gone, not half-way through.
    refused = ws.run("destroy", "-auto-approve", "-no-color", *EXAMPLE_VARS, cwd=EXAMPLE, check=False)
    assert refused.returncode == 1
    assert "deletion_protection is on" in refused.stderr, refused.stderr
    assert ws.left() == created

    # README's teardown, as written there: protection off, then destroy.
    for step in _terraform_steps(readme_commands()[2]):
        ws.run(*step, "-auto-approve", "-no-color", *EXAMPLE_VARS, cwd=EXAMPLE)
    assert ws.left() == []
    assert ws.run("state", "list", cwd=EXAMPLE).stdout == ""


def test_the_readme_gives_apply_run_and_destroy_as_one_command_each():
    apply, run, teardown = readme_commands()
    assert [s[0] for s in _terraform_steps(apply)] == ["apply"]
    output, fanout = run.split("&&")
    assert _terraform_steps(output) == [["output", "-json", "job_catalog", ">", "job_catalog.json"]]
    assert shlex.split(fanout)[:2] == ["fanout", "run"] and "--catalog job_catalog.json" in fanout
    assert [s[0] for s in _terraform_steps(teardown)] == ["apply", "destroy"]
    readme = (TERRAFORM / "README.md").read_text(encoding="utf-8")
    for needed in (
        "What a deployer sets",
        "jobs_dir",
        "--impersonate-service-account",
        "grant_registry_access",
        "soft_delete_retention_days",
        ".terraform.lock.hcl",
    ):
        assert needed in readme, needed
    root = (REPO / "README.md").read_text(encoding="utf-8")
    assert all(command in root for command in (apply.split(" && ")[-1], run, teardown))


def test_the_schema_is_read_from_the_bindings_not_guessed(tmp_path):
    """Spot checks of the extracted schema against the provider's documented shape."""
    from google_schema import provider_schema
    from tfrun import used_types

    schema = json.loads(provider_schema(REPO, BOUNDS[-1], *used_types()).read_text())
    job = schema["resource_schemas"]["google_cloud_run_v2_job"]["block"]
    assert job["attributes"]["name"] == {"type": "string", "required": True}
    assert job["attributes"]["uid"] == {"type": "string", "computed": True}
    assert job["block_types"]["template"]["min_items"] == job["block_types"]["template"]["max_items"] == 1
    task = job["block_types"]["template"]["block"]["block_types"]["template"]["block"]
    assert task["block_types"]["containers"]["nesting_mode"] == "list"
    assert "mount_options" in task["block_types"]["volumes"]["block"]["block_types"]["gcs"]["block"]["attributes"]
    bucket = schema["resource_schemas"]["google_storage_bucket"]["block"]
    assert bucket["block_types"]["lifecycle_rule"]["nesting_mode"] == "list"
    assert bucket["attributes"]["location"]["required"]
