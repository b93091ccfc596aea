"""``from controller import CloudRunJob``: the seed article's Prefect 2 flow on Prefect 3, on the embedded
local emulator (no project anywhere: the emulator starts for the call), with a real Prefect API server.

The article's flow is written here as the article has it; only its ``CloudRunJob`` import line differs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from testenv import report_document

from controller.report import ItemState

# One interpreter stands in for python:3.12-slim: the emulator runs a container's command on this host.
PYTHON = sys.executable
ECHO_ARGS = "import sys; print('arg', *sys.argv[1:]); sys.exit(int(sys.argv[-1]))"


@pytest.fixture
def adc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What README says to do offline: ``eval "$(fanout offline-credentials)"``, placeholder Application
    Default Credentials of a user that name no project, so ``GcpCredentials`` blocks load offline; no
    emulator configured."""
    env = {**os.environ, "FANOUT_CACHE_DIR": str(tmp_path / "cache")}
    printed = subprocess.run(
        [sys.executable, "-m", "controller.cli", "offline-credentials"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    name, _, value = printed.strip().removeprefix("export ").partition("=")
    assert name == "GOOGLE_APPLICATION_CREDENTIALS" and Path(value).is_file(), printed
    monkeypatch.setenv(name, value)
    for unset in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "FANOUT_EMULATOR_HOST"):
        monkeypatch.delenv(unset, raising=False)


@pytest.fixture
def local(adc: None, prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No project anywhere: runs start their own emulator; reports go to ./reports."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "reports"


def test_the_seed_articles_flow_runs_with_only_its_import_changed(local: Path) -> None:
    # --- the article's code: saving the credentials block (section 1) ...
    from prefect_gcp import GcpCredentials

    credentials_block = GcpCredentials()
    credentials_block.save("my-gcp-creds", overwrite=True)

    # ... and its Cloud Run job flow, with `from prefect_gcp.cloud_run import CloudRunJob` replaced.
    from prefect import flow

    from controller import CloudRunJob

    @flow
    def cloud_run_job_flow():  # type: ignore[no-untyped-def]
        cloud_run_job = CloudRunJob(
            image="us-docker.pkg.dev/cloudrun/container/job:latest",
            credentials=GcpCredentials.load("my-gcp-creds"),
            region="us-central1",
            command=["echo", "Hello, Prefect!"],
        )
        return cloud_run_job.run()

    # --- end of the article's code

    state = cloud_run_job_flow(return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result.state is ItemState.SUCCEEDED
    assert result.exit_code == 0
    assert result.status_code == 0
    assert any("Hello, Prefect!" in line for line in result.log_tail)
    assert result.execution.startswith("projects/local-project/locations/us-central1/jobs/")
    assert result.duration_seconds is not None and result.duration_seconds >= 0
    # A local report, beside the others in ./reports.
    report = report_document(result.report_url)
    assert Path(result.report_url).resolve() == (local / report["batch_id"] / "report.json").resolve()
    assert [item["state"] for item in report["items"]] == ["succeeded"]

    # The run is a subflow run of the article's flow run in the Prefect UI.
    runs = _subflow_runs(state.state_details.flow_run_id)
    assert [run.name for run in runs] == [report["batch_id"]]  # named after its batch, as every batch's run is
    assert runs[0].state.is_completed()


def _subflow_runs(parent: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )


def test_map_runs_one_item_per_args_list_in_order(local: Path) -> None:
    from prefect import flow

    from controller import CloudRunJob

    job = CloudRunJob(image="python:3.12-slim", region="us-central1", command=[PYTHON, "-c", ECHO_ARGS], max_retries=0)

    @flow
    def fan() -> list[Any]:
        return job.map([["a", "0"], ["b", "4"], ["c", "0"], None])

    state = fan(return_state=True)
    # The caller's flow run goes on with every result; the batch's own (sub)flow run tells the truth: Failed.
    assert state.is_completed(), state
    results = state.result()
    batch = _subflow_runs(state.state_details.flow_run_id)
    assert len(batch) == 1 and batch[0].state.is_failed(), batch
    counts = "2 of 4 items did not succeed (2 succeeded, 2 failed)"
    assert batch[0].state.message.startswith(f"batch {batch[0].name}: {counts}")
    # The last item has no args: sys.argv[-1] is "-c", not a number.
    assert [r.state for r in results] == [ItemState.SUCCEEDED, ItemState.FAILED, ItemState.SUCCEEDED, ItemState.FAILED]
    assert [r.exit_code for r in results[:3]] == [0, 4, 0]
    for result, letter in zip(results[:3], "abc", strict=True):
        assert any(f"arg {letter}" in line for line in result.log_tail), result.log_tail
    assert len({r.execution for r in results}) == 4  # one-off runs: one execution per item
    assert len({r.report_url for r in results}) == 1  # one batch, one report


def test_outside_a_flow_a_failing_command_reports_its_state_and_exit_code(local: Path) -> None:
    from controller import CloudRunJob

    job = CloudRunJob(
        image="python:3.12-slim",
        region="europe-west1",
        command=[PYTHON, "-c", ECHO_ARGS],
        args=["boom", "3"],
        max_retries=1,
        env={"GREETING": "hello"},
    )
    result = job.run()
    assert result.state is ItemState.FAILED
    assert result.exit_code == 3
    assert result.status_code == 1
    assert any("arg boom 3" in line for line in result.log_tail)
    assert "/locations/europe-west1/" in (result.execution or "")
    assert job.map([]) == []


def test_run_returns_what_the_command_wrote_to_fanout_result_file(local: Path) -> None:
    """An image without the fanout runner: the result comes back through the job's Cloud Storage volume,
    which the embedded emulator maps to the local report folder."""
    from controller import CloudRunJob

    write = "import json, os, sys; json.dump({'args': sys.argv[1:]}, open(os.environ['FANOUT_RESULT_FILE'], 'w'))"
    job = CloudRunJob(image="python:3.12-slim", region="us-central1", command=[PYTHON, "-c", write], args=["x", "y"])

    result = job.run()

    assert result.state is ItemState.SUCCEEDED
    assert result.result == {"args": ["x", "y"]}


def test_invalid_fields_are_refused_by_name() -> None:
    from controller import CloudRunJob

    with pytest.raises(ValidationError, match="timeout"):
        CloudRunJob(image="python:3.12-slim", region="us-central1", command=["true"], timeout=7200)
    with pytest.raises(ValidationError, match="vpc_connector"):
        CloudRunJob(image="python:3.12-slim", region="us-central1", command=["true"], vpc_connector="x")
    with pytest.raises(ValueError, match="memory_unit"):
        CloudRunJob(image="python:3.12-slim", region="us-central1", command=["true"], memory=512).run()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cpu": 10**9}, "'1000000000' is not a CPU limit Cloud Run takes"),
        ({"cpu": 3}, "'3' is not a CPU limit Cloud Run takes"),
        ({"memory": 99999999999999999, "memory_unit": "Gi"}, "is not a memory limit Cloud Run takes"),
        ({"memory": 64, "memory_unit": "Mi"}, "'64Mi' is not a memory limit Cloud Run takes"),
        ({"cpu": 1, "memory": 16, "memory_unit": "Gi"}, "memory '16Gi' needs at least 4 vCPU (cpu is '1')"),
        ({"region": "../../x"}, "'../../x' is not a Cloud Run region such as 'us-central1'"),
        ({"image": ""}, "image is a container image URL"),
        ({"report_to": "gs://"}, "'gs://' names no bucket; use gs://BUCKET/PREFIX"),
        ({"report_to": ""}, "give a folder or a gs://BUCKET/PREFIX for the report, not an empty string"),
    ],
)
def test_limits_region_and_report_destination_are_checked_when_the_block_is_made(
    fields: dict[str, Any], message: str
) -> None:
    from controller import CloudRunJob

    with pytest.raises(ValidationError, match=re.escape(message)) as caught:
        CloudRunJob(**{"image": "python:3.12-slim", "region": "us-central1", "command": ["true"], **fields})
    assert len(str(caught.value)) < 1000  # one clear error, not a long traceback of the run


def test_a_project_from_an_unsaved_block_is_refused_before_anything_starts(adc: None) -> None:
    from prefect_gcp import GcpCredentials

    from controller import CloudRunJob

    job = CloudRunJob(
        image="python:3.12-slim",
        region="us-central1",
        command=["true"],
        credentials=GcpCredentials(project="my-project"),
    )
    with pytest.raises(ValueError, match="save the GcpCredentials block first"):
        job.run()


# -- results as they finish, and the awaitable calls ---------------------------------------------------------

# Sleeps argv[1] seconds, then (given a second argument) waits for that file to exist, within a deadline so a
# stream that never hands a result over fails the test rather than hanging it; then answers.
SLEEP_THEN_ANSWER = (
    "import json, os, sys, time; time.sleep(float(sys.argv[1])); gate = sys.argv[2:]; until = time.time() + 120\n"
    "while gate and not os.path.exists(gate[0]) and time.time() < until: time.sleep(0.05)\n"
    "json.dump({'slept': sys.argv[1]}, open(os.environ['FANOUT_RESULT_FILE'], 'w'))"
)


def _sleeper() -> Any:
    from controller import CloudRunJob

    return CloudRunJob(
        image="example.com/sleeper:1",
        region="us-central1",
        command=[PYTHON, "-c", SLEEP_THEN_ANSWER],
        max_retries=0,
        poll_interval=0.3,
    )


def test_imap_yields_each_result_as_it_ends_in_completion_order(local: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    # Item 0 runs until the test has its first result: streamed, that comes while item 0 still runs, however
    # late a loaded machine polls; handed over only once the batch ended, it never comes before item 0 ends.
    gate = tmp_path / "first-result-received"
    naps = [["0", str(gate)], ["3"], ["0.2"]]
    stream = _sleeper().imap(naps)
    received = []
    for result in stream:
        received.append((result, datetime.now(UTC)))
        gate.touch()

    assert sorted(result.item.index for result, _ in received) == [0, 1, 2]
    assert all(result.state is ItemState.SUCCEEDED for result, _ in received)
    assert {result.item.index: result.result for result, _ in received} == {
        n: {"slept": nap} for n, [nap, *_] in enumerate(naps)
    }
    # In completion order (as Cloud Run's task end times say, not spec order: a loaded machine may start
    # them late), and the first came while the batch still ran: before item 0's task ended. A poll held back
    # by load may see several ends at once: they come by end time across launches, not in launch order.
    ends = [result.item.end_time for result, _ in received]
    assert ends == sorted(ends)  # type: ignore[type-var]
    assert received[0][0].item.index != 0
    item_0_end = next(result.item.end_time for result, _ in received if result.item.index == 0)
    assert item_0_end is not None and received[0][1] < item_0_end, (received[0][1], item_0_end)


def test_imap_in_spec_order_and_failures_as_values_or_raised(local: Path) -> None:
    from controller.stream import ItemFailed

    job = _sleeper().model_copy(update={"command": [PYTHON, "-c", ECHO_ARGS]})
    ordered = list(job.imap([["2"], ["0"]], order_outputs=True))
    expected = [(0, ItemState.FAILED, 2), (1, ItemState.SUCCEEDED, 0)]
    assert [(r.item.index, r.state, r.exit_code) for r in ordered] == expected

    raising = job.imap([["3"]], return_exceptions=False)
    with pytest.raises(ItemFailed, match="failed"):
        list(raising)
    # The batch runs to its end all the same (its report written, its emulator stopped).
    report = raising.wait(timeout=120)
    assert report is not None and report.items[0].exit_code == 3


def test_an_async_flow_awaits_run_and_map_and_iterates_imap(local: Path) -> None:
    import asyncio

    from prefect import flow

    @flow
    async def async_flow() -> tuple[Any, list[Any], list[Any]]:
        job = _sleeper()
        one = await job.model_copy(update={"args": ["0"]}).run()
        many = await job.map([["0"], ["0.1"]])
        seen = [result async for result in job.imap([["2"], ["0"]])]
        return one, many, seen

    one, many, seen = asyncio.run(async_flow())
    assert one.state is ItemState.SUCCEEDED
    assert [r.state for r in many] == [ItemState.SUCCEEDED, ItemState.SUCCEEDED]
    assert sorted(result.item.index for result in seen) == [0, 1]
    ends = [result.item.end_time for result in seen]
    assert ends == sorted(ends)  # type: ignore[type-var]
    # In sync code the same call returns the value.
    assert _sleeper().map([["0"]])[0].result == {"slept": "0"}
