"""The shipped job.yaml files are valid catalog entries, and the example fields reject contradictions."""

from __future__ import annotations

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
