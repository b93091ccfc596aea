"""jobs/*/job.yaml and terraform/ describe the same jobs: one google_cloud_run_v2_job per job.yaml, with
the same image, timeout, retries and env, and nothing in Terraform that names a job jobs/ lacks.

There is no terraform binary here, so the test evaluates the module's own expressions for the job
resource against what its locals compute from the yaml files (a tiny evaluator for the forms the module
uses: anything else fails the test, so a change to the wiring cannot slip past it)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tfparse import REPO, TERRAFORM, expression, load_dir, locals_of, resources

from controller.catalog import Catalog, JobDefinition, Resources, SecretRef

REGISTRY = "europe-west1-docker.pkg.dev/my-project/fanout-jobs"
JOBS_DIR = REPO / "jobs"

# The module's job locals, verbatim (whitespace-normalised). The Python in terraform_jobs() below
# mirrors them; when they change, this test says so and the mirror must change with them.
EXPECTED_JOB_SOURCES = (
    '{for file in fileset(local.jobs_dir, "*/job.yaml") : dirname(file) => '
    'yamldecode(file("${local.jobs_dir}/${file}"))}'
)
EXPECTED_JOBS = (
    "{for name, source in local.job_sources : name => merge(local.job_defaults, "
    "{for field, value in source : field => value if !contains(local.local_only_fields, field)}, "
    '{image = "${var.image_registry}/${source.image}", '
    "resources = merge(local.resource_defaults, try(source.resources, {})), "
    "secret_env = {for env_name, ref in try(source.secret_env, {}) : env_name => "
    "merge(local.secret_defaults, ref)}})}"
)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def terraform_jobs(module_locals: dict[str, Any], jobs_dir: Path, registry: str) -> dict[str, dict[str, Any]]:
    """``local.jobs`` as Terraform computes it from ``jobs_dir``."""
    jobs = {}
    for path in sorted(jobs_dir.glob("*/job.yaml")):
        source = yaml.safe_load(path.read_text(encoding="utf-8"))
        job = copy.deepcopy(module_locals["job_defaults"])
        job.update({k: v for k, v in source.items() if k not in module_locals["local_only_fields"]})
        job["image"] = f"{registry}/{source['image']}"
        job["resources"] = {**module_locals["resource_defaults"], **source.get("resources", {})}
        job["secret_env"] = {
            name: {**module_locals["secret_defaults"], **ref} for name, ref in source.get("secret_env", {}).items()
        }
        jobs[path.parent.name] = job
    return jobs


_REFERENCE = re.compile(r"^(\w+)\.(key|value)((?:\.[a-z_]+)*)$")
_LITERALS = {"null": None, "false": False, "true": True, "[]": [], '"MEMORY"': "MEMORY"}
_TRY = re.compile(r"^try\(([\w.]+), (null|false|\[\]|\"MEMORY\")\)$")
_OPTIONAL_BLOCK = re.compile(r"^(?:try\(([\w.]+), null\)|([\w.]+)) == null \? \[\] : \[([\w.]+)\]$")
JOBS_ACCOUNT = "<google_service_account.jobs.email>"


def reference(expr: str, scope: dict[str, Any]) -> Any:
    match = _REFERENCE.match(expr)
    if not match:
        raise AssertionError(f"the test cannot evaluate {expr!r}: extend evaluate() if the change is right")
    target: Any = scope[match.group(1)][match.group(2)]
    for attribute in filter(None, match.group(3).split(".")):
        target = target[attribute]  # a missing attribute is an error in Terraform too, unless inside try()
    return target


def evaluate(value: Any, scope: dict[str, Any]) -> Any:
    """A resource attribute's value, for the few expression forms the job resource uses."""
    if isinstance(value, list):
        return [evaluate(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: evaluate(v, scope) for k, v in value.items()}
    expr = expression(value)
    if expr is None:
        return value
    if expr == "length(each.value.command) > 0 ? each.value.command : null":
        return scope["each"]["value"]["command"] or None
    if expr == "coalesce(each.value.service_account, google_service_account.jobs.email)":
        return scope["each"]["value"]["service_account"] or JOBS_ACCOUNT
    if match := _TRY.match(expr):
        try:
            return reference(match.group(1), scope)
        except (KeyError, TypeError):
            return _LITERALS[match.group(2)]
    if match := _OPTIONAL_BLOCK.match(expr):
        try:
            present = reference(match.group(1) or match.group(2), scope)
        except (KeyError, TypeError):
            present = None
        return [] if present is None else [reference(match.group(3), scope)]
    return reference(expr, scope)


def render_blocks(body: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
    """A block's attributes, with each dynamic block expanded into a list under its name."""
    rendered = {key: evaluate(value, scope) for key, value in body.items() if key not in ("dynamic", "content")}
    for dynamic in body.get("dynamic", []):
        ((name, block),) = dynamic.items()
        items = evaluate(block["for_each"], scope)
        pairs = items.items() if isinstance(items, dict) else enumerate(items)
        rendered.setdefault(name, [])
        for key, item in pairs:
            rendered[name].append(render_blocks(block["content"][0], {**scope, name: {"key": key, "value": item}}))
    return rendered


def rendered_container(job_resource: dict[str, Any], name: str, job: dict[str, Any]) -> dict[str, Any]:
    """The job as Terraform would send it: job, execution, task and container settings, blocks as lists."""
    scope = {"each": {"key": name, "value": job}}
    execution = job_resource["template"][0]
    task = execution["template"][0]
    task_blocks = render_blocks({k: v for k, v in task.items() if k != "containers"}, scope)
    container = render_blocks(task["containers"][0], scope)
    return {
        "name": evaluate(job_resource["name"], scope),
        "launch_stage": evaluate(job_resource["launch_stage"], scope),
        "task_count": evaluate(execution["task_count"], scope),
        "parallelism": evaluate(execution["parallelism"], scope),
        "service_account": task_blocks["service_account"],
        "timeout": task_blocks["timeout"],
        "max_retries": task_blocks["max_retries"],
        "volumes": task_blocks.get("volumes", []),
        "vpc_access": task_blocks.get("vpc_access", []),
        "image": container["image"],
        "command": container["command"],
        "args": container["args"],
        "limits": container["resources"][0]["limits"],
        "env": container.get("env", []),
        "volume_mounts": container.get("volume_mounts", []),
    }


@pytest.fixture(scope="module")
def job_resource(module) -> dict[str, Any]:
    jobs = resources(module, "google_cloud_run_v2_job")
    assert list(jobs) == ["this"], "one google_cloud_run_v2_job resource, for_each over the job definitions"
    return jobs["this"]


def test_the_module_reads_the_job_yaml_files(module):
    module_locals = locals_of(module)
    assert expression(module_locals["jobs_dir"]) == 'coalesce(var.jobs_dir, "${path.module}/../jobs")'
    assert (TERRAFORM / "../jobs").resolve() == JOBS_DIR
    assert normalise(expression(module_locals["job_sources"]) or "") == EXPECTED_JOB_SOURCES
    assert normalise(expression(module_locals["jobs"]) or "") == EXPECTED_JOBS


def test_terraform_defaults_are_the_catalogs(module):
    module_locals = locals_of(module)
    fields = JobDefinition.model_fields
    for name, value in module_locals["job_defaults"].items():
        assert fields[name].get_default() == value, f"job_defaults.{name}"
    assert module_locals["resource_defaults"] == Resources().model_dump()
    assert module_locals["secret_defaults"] == {"version": SecretRef.model_fields["version"].default}


def test_every_job_field_is_handled_by_terraform(module):
    """A field added to JobDefinition must get a Terraform default, be required, or be local-only."""
    module_locals = locals_of(module)
    handled = {*module_locals["job_defaults"], *module_locals["local_only_fields"], "resources", "secret_env"}
    for name, field in JobDefinition.model_fields.items():
        assert name in handled or field.is_required(), f"JobDefinition.{name} is unknown to terraform/main.tf"


def test_the_job_resource_is_one_per_definition(job_resource):
    assert expression(job_resource["for_each"]) == "local.jobs"
    assert expression(job_resource["name"]) == "each.key"
    task = job_resource["template"][0]["template"][0]
    assert (
        expression(task["service_account"]) == "coalesce(each.value.service_account, google_service_account.jobs.email)"
    )


def test_every_job_definition_becomes_the_same_cloud_run_job(module, job_resource):
    catalog = Catalog.from_jobs_dir(JOBS_DIR, registry=REGISTRY)
    jobs = terraform_jobs(locals_of(module), JOBS_DIR, REGISTRY)

    assert set(jobs) == set(catalog.jobs)
    assert len(jobs) >= 3
    for name, job in jobs.items():
        definition = catalog[name]
        rendered = rendered_container(job_resource, name, job)
        assert rendered["name"] == definition.name == job["name"]
        assert rendered["image"] == definition.image
        assert rendered["timeout"] == definition.timeout
        assert rendered["max_retries"] == definition.max_retries
        assert rendered["task_count"] == definition.task_count
        assert rendered["parallelism"] == definition.parallelism
        assert rendered["args"] == definition.args
        assert rendered["command"] == (definition.command or None)
        assert rendered["limits"] == definition.resources.model_dump()
        expected_env = [{"name": k, "value": v} for k, v in definition.env.items()] + [
            {"name": k, "value_source": [{"secret_key_ref": [{"secret": ref.secret, "version": ref.version}]}]}
            for k, ref in definition.secret_env.items()
        ]
        assert rendered["env"] == expected_env


def test_a_job_added_to_the_folder_is_a_job_in_terraform(module, job_resource, tmp_path):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "job.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "extra",
                "description": "x",
                "image": "x/extra:1",
                "timeout": "5s",
                "env": {"A": "1"},
                "secret_env": {"TOKEN": {"secret": "api-token"}},
                "resources": {"memory": "1Gi"},
            }
        )
    )
    jobs = terraform_jobs(locals_of(module), tmp_path, "r")
    rendered = rendered_container(job_resource, "extra", jobs["extra"])
    definition = Catalog.from_jobs_dir(tmp_path, registry="r")["extra"]
    assert rendered["image"] == definition.image == "r/x/extra:1"
    assert rendered["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert rendered["max_retries"] == definition.max_retries == 3
    assert rendered["env"][1] == {
        "name": "TOKEN",
        "value_source": [{"secret_key_ref": [{"secret": "api-token", "version": "latest"}]}],
    }


def _tf_files() -> list[Path]:
    return sorted(TERRAFORM.rglob("*.tf")) + sorted(TERRAFORM.rglob("*.tfvars*"))


def test_nothing_in_terraform_names_a_job_that_jobs_lacks():
    known = {path.parent.name for path in JOBS_DIR.glob("*/job.yaml")}
    for path in _tf_files():
        text = path.read_text(encoding="utf-8")
        # Indexing a job resource by a literal name, or pointing at a job folder by name.
        named = set(re.findall(r'google_cloud_run_v2_job[a-z_]*\.[a-z_]+\["([^"]+)"\]', text))
        named |= set(re.findall(r"jobs/([a-z][-a-z0-9]*)/", text))
        assert named <= known, f"{path.relative_to(REPO)} names jobs {sorted(named - known)} that jobs/ lacks"
    for directory in [TERRAFORM, *(p for p in (TERRAFORM / "examples").iterdir() if p.is_dir())]:
        for kind, body in resources(load_dir(directory), "google_cloud_run_v2_job").items():
            assert expression(body.get("for_each")) == "local.jobs", f"{directory}: job resource {kind}"


def test_job_iam_covers_exactly_the_created_jobs(module):
    for name, grant in resources(module, "google_cloud_run_v2_job_iam_member").items():
        assert expression(grant["for_each"]) == "google_cloud_run_v2_job.this", name
        assert expression(grant["name"]) == "each.value.name", name
