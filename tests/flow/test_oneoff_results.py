"""Results from one-off images, which have no runner: their jobs mount the batch's results folder as a Cloud
Storage volume and each task writes ``$FANOUT_RESULT_FILE`` there (an item of several tasks:
``$FANOUT_RESULT_DIR/$CLOUD_RUN_TASK_INDEX.json``). Real Prefect flow runs on the Cloud Run emulator, reports
in fake-gcs-server or in a local folder the emulator maps the volume's bucket to."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testenv import BUCKET, FLOW_PARAMS, PROJECT, REGION

from cloudrun_emulator import Emulator
from controller.batchfolder import open_report
from controller.catalog import Catalog
from controller.emulator_jobs import catalog_emulator
from controller.plan import LOCAL_RESULTS_BUCKET
from controller.redact import MASK
from controller.report import ItemState, Report
from controller.results import read_results

Run = Callable[..., tuple[dict[str, Any], Report]]

# The item's own program: it knows nothing of fanout but the variables it is given.
WRITE = "import json, os, sys; json.dump(json.loads(sys.argv[1]), open(os.environ['FANOUT_RESULT_FILE'], 'w'))"
WRITE_PER_TASK = (
    "import json, os; i = os.environ['CLOUD_RUN_TASK_INDEX'];"
    "json.dump({'task': int(i)}, open(os.path.join(os.environ['FANOUT_RESULT_DIR'], i + '.json'), 'w'))"
)


def one_off(key: str, code: str, *args: str, **fields: Any) -> dict[str, Any]:
    return {"key": key, "image": "example.com/no-runner:1", "command": [sys.executable, "-c", code, *args], **fields}


def spec(batch_id: str) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "items": [
            one_off("answer", WRITE, '{"answer": 42}'),
            one_off("nested/key", WRITE, "[1, 2]"),
            one_off("tasks", WRITE_PER_TASK, task_count=3),
            one_off("silent", "print('no result')"),
            one_off("fails", WRITE + "; sys.exit(5)", '"partial"'),
        ],
    }


EXPECTED = [
    ("answer", ItemState.SUCCEEDED, {"answer": 42}),
    ("nested/key", ItemState.SUCCEEDED, [1, 2]),
    ("tasks", ItemState.SUCCEEDED, [{"task": 0}, {"task": 1}, {"task": 2}]),
    ("silent", ItemState.SUCCEEDED, None),
    # A mounted volume keeps what the task wrote whatever its exit code (the runner stores only on exit 0).
    ("fails", ItemState.FAILED, "partial"),
]


def test_one_off_results_reach_the_report_and_results_jsonl_in_gcs(run_flow: Run, gcs: Any) -> None:
    _summary, report = run_flow(spec("oneoff-gcs"))

    assert [(i.key, i.state, i.result) for i in report.items] == EXPECTED
    records = list(read_results(f"gs://{BUCKET}/flow-tests/oneoff-gcs", gcs))
    assert [(r.key, r.state, r.result) for r in records] == EXPECTED
    # The objects are where the collector looks: <prefix><batch>/results/<key>/<task>.json.
    names = {blob.name for blob in gcs.list_blobs(BUCKET, prefix="flow-tests/oneoff-gcs/results/")}
    assert "flow-tests/oneoff-gcs/results/tasks/2.json" in names
    assert "flow-tests/oneoff-gcs/results/nested/key/0.json" in names


@pytest.fixture
def local_emulator(catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator that maps the one-off jobs' results bucket to the report folder ``tmp_path/reports``."""
    reports = tmp_path / "reports"
    reports.mkdir()
    buckets = {LOCAL_RESULTS_BUCKET: str(reports)}
    with catalog_emulator(catalog, project=PROJECT, region=REGION, local_buckets=buckets) as emulator:
        monkeypatch.setenv("FANOUT_EMULATOR_HOST", emulator.url)
        yield emulator


@pytest.mark.usefixtures("prefect_server", "local_emulator")
def test_one_off_results_reach_a_local_report(tmp_path: Path) -> None:
    from controller.flow import fan_out

    reports = tmp_path / "reports"
    fan_out(
        batch=spec("oneoff-local"),
        **FLOW_PARAMS,
        report_to=str(reports),
        poll_interval=0.3,
        fail_on_item_failure=False,
    )

    report = open_report(str(reports / "oneoff-local")).report
    assert [(i.key, i.state, i.result) for i in report.items] == EXPECTED
    records = list(read_results(str(reports / "oneoff-local")))
    assert [(r.key, r.state, r.result) for r in records] == EXPECTED


def test_a_literal_secret_in_a_one_off_result_is_masked(run_flow: Run, gcs: Any) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    leak = "import json, os; json.dump({'token': os.environ['TOKEN']}, open(os.environ['FANOUT_RESULT_FILE'], 'w'))"
    batch = {"batch_id": "oneoff-secret", "items": [one_off("leaks", leak, env={"TOKEN": {"value": canary}})]}

    _summary, report = run_flow(batch)

    assert [i.result for i in report.items] == [{"token": MASK}]
    for name in ("report.json", "report.html", "results.jsonl"):
        stored = gcs.bucket(BUCKET).blob(f"flow-tests/oneoff-secret/{name}").download_as_bytes()
        assert canary.encode() not in stored, name
    assert next(read_results(f"gs://{BUCKET}/flow-tests/oneoff-secret", gcs)).result == {"token": MASK}
