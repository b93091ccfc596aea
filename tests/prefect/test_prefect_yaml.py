"""prefect.yaml stays true to the flow and to the work pool types it names.

The process deployment is exercised end to end in test_prefect_deployment.py; the Cloud Run one cannot run
here, so its job variables are checked against the cloud-run-v2 worker's own variable schema, and the
result settings both deployments set are checked to be settings Prefect actually reads (a misspelt
PREFECT_* variable would be ignored silently).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prefectsupport import REPO

from controller.flow import fan_out


def deployments() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {deployment["name"]: deployment for deployment in config["deployments"]}


DEPLOYMENTS = sorted(deployments())


def test_names_the_two_deployments() -> None:
    assert DEPLOYMENTS == ["fan-out-batch", "fan-out-batch-cloud-run"]


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_parameters_are_valid_flow_parameters(name: str) -> None:
    deployment = deployments()[name]
    assert deployment["entrypoint"] == "controller/flow.py:fan_out"
    parameters = deployment["parameters"]
    # The flow validates them as a run would: unknown names and wrong types fail here.
    validated = fan_out.validate_parameters({"batch": "examples/hello.yaml", **parameters})
    assert set(parameters) <= set(validated)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_a_deployment_run_with_an_item_that_did_not_succeed_ends_failed(name: str) -> None:
    """README: a flow run ends Failed when an item did not succeed; a deployment does not hide it."""
    assert deployments()[name]["parameters"].get("fail_on_item_failure", True) is True


def test_every_flow_parameter_has_a_description() -> None:
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(fan_out).model_dump()
    missing = [name for name, prop in schema["properties"].items() if not prop.get("description")]
    assert missing == [], f"add these to fan_out's Args section (the Prefect UI shows them): {missing}"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_result_settings_are_settings_prefect_reads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings

    env = deployments()[name]["work_pool"]["job_variables"]["env"]
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    results = Settings().results
    assert results.persist_by_default is True
    assert results.default_serializer == "json"
    if "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK" in env:
        assert results.default_storage_block == env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]
        # The block named for results is the one the flow writes reports to.
        slug, _, block_name = results.default_storage_block.partition("/")
        assert slug == "gcs-bucket"
        assert deployments()[name]["parameters"]["report_block"] == block_name


def _pool_variables(pool_type: str) -> dict[str, Any]:
    from prefect.workers.process import ProcessWorker
    from prefect_gcp.workers.cloud_run_v2 import CloudRunWorkerV2

    worker = {"process": ProcessWorker, "cloud-run-v2": CloudRunWorkerV2}[pool_type]
    properties: dict[str, Any] = worker.get_default_base_job_template()["variables"]["properties"]
    return properties


@pytest.mark.parametrize(
    ("name", "pool", "pool_type"),
    [("fan-out-batch", "fanout-local", "process"), ("fan-out-batch-cloud-run", "fanout-cloud-run", "cloud-run-v2")],
)
def test_job_variables_are_variables_of_the_pool_type(name: str, pool: str, pool_type: str) -> None:
    work_pool = deployments()[name]["work_pool"]
    assert work_pool["name"] == pool
    variables = _pool_variables(pool_type)
    assert set(work_pool["job_variables"]) <= set(variables), sorted(set(work_pool["job_variables"]) - set(variables))
    if "timeout" in work_pool["job_variables"]:
        assert work_pool["job_variables"]["timeout"] <= variables["timeout"]["maximum"]


def test_cloud_run_deployment_runs_the_code_in_its_image() -> None:
    deployment = deployments()["fan-out-batch-cloud-run"]
    assert deployment["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/fanout"}}]
    assert deployment["work_pool"]["job_variables"]["image"] == "{{ $FANOUT_CONTROLLER_IMAGE }}"


def test_local_deployment_runs_the_checkout_it_was_deployed_from() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (build,) = config["build"]
    step = build["prefect.deployments.steps.run_shell_script"]
    assert step["script"] == "pwd"
    (pull,) = config["pull"]
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    assert directory == "{{ " + step["id"] + ".stdout }}"
    assert "pull" not in deployments()["fan-out-batch"]  # so the top-level pull step applies
