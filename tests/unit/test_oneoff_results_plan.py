"""Where one-off tasks write results: the env each launch carries, the volume each one-off job mounts, and
when a local report folder can be mounted at all."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from controller.catalog import Catalog
from controller.plan import (
    ENV_RESULT_DIR,
    ENV_RESULT_FILE,
    LOCAL_RESULTS_BUCKET,
    ResultsVolume,
    plan,
)
from controller.results import volume
from controller.spec import load_batch
from controller.store import GcsStore, LocalStore

VOLUME = ResultsVolume("reports-bucket", "fanout/b1/results")


def _batch(catalog: Catalog) -> Any:
    one_off = {"image": "example.com/app:1", "command": [sys.executable, "-c", "pass"]}
    items = [
        {"key": "one", **one_off},
        {"key": "a/b", **one_off, "task_count": 3},
        {"key": "cataloged", "job": "hello"},
    ]
    return load_batch({"batch_id": "b1", "items": items}, catalog)


def test_one_off_launches_name_their_result_file_or_folder_and_others_do_not() -> None:
    catalog = Catalog.from_jobs_dir()
    the_plan = plan(_batch(catalog), catalog, results_root="gs://x/r", results_volume=VOLUME)

    envs = [dict(launch.env) for launch in the_plan.launches]
    assert [(env.get(ENV_RESULT_FILE), env.get(ENV_RESULT_DIR)) for env in envs] == [
        ("/fanout/results/one/0.json", "/fanout/results/one"),
        (None, "/fanout/results/a/b"),  # several tasks: no one value can name each task's file
        (None, None),  # the runner sets FANOUT_RESULT_FILE for catalog jobs
    ]
    assert [job.results for job in the_plan.one_off_jobs] == [VOLUME]


def test_a_one_off_job_is_named_after_the_folder_it_mounts() -> None:
    catalog = Catalog.from_jobs_dir()
    batch = _batch(catalog)
    names = {
        mounted: plan(batch, catalog, results_root="r", results_volume=mounted).one_off_jobs[0].name
        for mounted in (None, VOLUME, ResultsVolume("reports-bucket", "fanout/b2/results"))
    }
    assert len(set(names.values())) == 3


def test_the_volume_of_a_gcs_report_is_its_batchs_results_folder() -> None:
    gcs = GcsStore(_NoClient(), "reports-bucket", "fanout")
    assert volume(gcs, "b1", {}) == VOLUME


def test_a_local_report_is_mounted_only_where_the_emulator_maps_it(tmp_path: Path) -> None:
    local = LocalStore(tmp_path)
    assert volume(local, "b1", {}) is None
    assert volume(local, "b1", {LOCAL_RESULTS_BUCKET: str(tmp_path / "elsewhere")}) is None
    assert volume(local, "b1", {LOCAL_RESULTS_BUCKET: str(tmp_path)}) == ResultsVolume(
        LOCAL_RESULTS_BUCKET, "b1/results"
    )


class _NoClient:
    """GcsStore only asks its client for a bucket handle when it is built; no call is made here."""

    def bucket(self, name: str) -> object:
        return object()
