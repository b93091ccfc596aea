"""The shipped job.yaml files are valid catalog entries, and the example fields reject contradictions."""

from __future__ import annotations

import re
import sys

import pytest
import yaml
from pydantic import ValidationError

from controller.catalog import Catalog, CatalogError, JobDefinition, JobExample


def test_the_shipped_jobs_load_with_local_entrypoints():
    catalog = Catalog.from_jobs_dir()
    assert {"hello", "wordcount", "flaky"} <= set(catalog.jobs)
    images = catalog.local_images()
    for job in catalog:
        assert job.image.startswith("local/fanout/")
        assert job.image in images
        python, no_site, runner = images[job.image][:3]
        assert (python, no_site) == (sys.executable, "-S")  # stdlib only, as in the slim images
        assert runner.endswith("jobs/runner/fanout_runner.py")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"outcome": "succeeded", "exit_code": 3}, "a succeeded example exits with 0"),
        ({"outcome": "failed", "exit_code": 0}, "non-zero"),
        ({"timeout": "0s"}, "timeout must be between"),
        ({"timeout": "soon"}, "expected a duration"),
    ],
)
def test_contradictory_examples_are_rejected(fields, message):
    with pytest.raises(ValidationError, match=message):
        JobExample.model_validate(fields)


def test_example_timeout_override_reads_as_seconds():
    assert JobExample(timeout="1m30s").timeout_seconds == 90
    assert JobExample().timeout_seconds is None


def test_a_job_that_requires_args_needs_them_in_every_example():
    with pytest.raises(ValidationError, match="requires args"):
        JobDefinition(name="wc", description="x", image="x:1", requires_args=True, examples=[JobExample()])


def test_example_env_names_follow_cloud_runs_rules():
    with pytest.raises(ValidationError, match="reserved"):
        JobDefinition(name="x", description="x", image="x:1", examples=[JobExample(env={"CLOUD_RUN_TASK_INDEX": "1"})])


def test_a_folder_whose_name_differs_from_the_job_is_reported(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "job.yaml").write_text(yaml.safe_dump({"name": "hello", "description": "x", "image": "i"}))
    with pytest.raises(CatalogError, match="must match its folder"):
        Catalog.from_jobs_dir(tmp_path)


def test_a_job_with_every_cloud_run_setting_loads(tmp_path):
    (tmp_path / "etl").mkdir()
    (tmp_path / "etl" / "job.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "etl",
                "description": "x",
                "image": "x/etl:1",
                "launch_stage": "BETA",
                "service_account": "etl-runner@my-project.iam.gserviceaccount.com",
                "vpc_access": {"connector": "projects/p/locations/europe-west1/connectors/c", "egress": "ALL_TRAFFIC"},
                "volumes": [
                    {
                        "name": "results",
                        "gcs": {"bucket": "bkt", "read_only": False, "mount_options": ["implicit-dirs"]},
                    },
                    {"name": "scratch", "empty_dir": {"size_limit": "128Mi"}},
                ],
                "volume_mounts": [{"name": "results", "mount_path": "/results"}],
            }
        )
    )
    job = Catalog.from_jobs_dir(tmp_path)["etl"]
    assert job.vpc_access is not None and job.vpc_access.egress == "ALL_TRAFFIC"
    assert job.volumes[0].gcs is not None and job.volumes[0].gcs.mount_options == ["implicit-dirs"]
    assert job.volumes[1].empty_dir is not None and job.volumes[1].empty_dir.medium == "MEMORY"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"service_account": "123456-compute@developer.gserviceaccount.com"}, "never the Compute Engine default"),
        ({"vpc_access": {"connector": "c"}}, "projects/PROJECT/locations/REGION/connectors/NAME"),
        (
            {
                "vpc_access": {
                    "connector": "projects/p/locations/r/connectors/c",
                    "network_interfaces": [{"network": "default"}],
                }
            },
            "not both or neither",
        ),
        ({"volumes": [{"name": "v"}]}, "exactly one of gcs and empty_dir"),
        (
            {"volumes": [{"name": "v", "gcs": {"bucket": "bkt", "mount_options": ["--implicit-dirs"]}}]},
            "leading dashes",
        ),
        ({"volumes": [{"name": "v", "empty_dir": {"size_limit": "lots"}}]}, "not a quantity"),
        ({"volumes": [{"name": "v", "empty_dir": {}}, {"name": "v", "empty_dir": {}}]}, "names used twice: v"),
        (
            {"volumes": [{"name": "v", "empty_dir": {}}], "volume_mounts": [{"name": "v", "mount_path": "/proc/x"}]},
            "does not mount volumes under /dev, /proc",
        ),
        ({"resources": {"cpu": "one"}}, "not a quantity"),
    ],
)
def test_cloud_run_settings_cloud_run_would_refuse_are_rejected(fields, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        JobDefinition.model_validate({"name": "x", "description": "x", "image": "x:1", **fields})
