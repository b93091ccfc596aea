"""Failures visible in Prefect: the flow run's name and final state, the launch task runs' states and the
progress artifact, read back through the Prefect API of the test server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from testenv import FLOW_PARAMS, cli_changes_undone

from cloudrun_emulator import Emulator

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[2]


def _spec(batch_id: str) -> dict[str, Any]:
    items = [{"key": f"ok-{i}", "job": "hello", "args": [f"n{i}"]} for i in range(3)]
    items += [{"key": f"bad-{i}", "job": "flaky", "args": ["--exit-code", "3"]} for i in range(2)]
    return {"batch_id": batch_id, "items": items}


def _runs(flow_run_id: UUID) -> tuple[Any, list[Any], list[Any]]:
    """The flow run, its task runs and its artifacts, as the Prefect API has them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only_this = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=only_this)
        artifacts = client.read_artifacts(flow_run_filter=only_this)
    return run, tasks, artifacts


def test_failed_items_fail_the_flow_run_and_their_launch_task_runs(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.flow import ItemsFailed, fan_out

    monkeypatch.setenv("FANOUT_EMULATOR_HOST", emulator.url)
    state = fan_out(
        batch=_spec("states-failed"),
        **FLOW_PARAMS,
        report_to=str(tmp_path),
        mode="per-item",
        poll_interval=0.3,
        return_state=True,
    )

    assert state.is_failed(), state
    report_url = str(tmp_path / "states-failed" / "report.json")
    assert state.message == (
        f"batch states-failed: 2 of 5 items did not succeed (3 succeeded, 2 failed); report: {report_url}"
    )
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ItemsFailed)
    assert error.summary["failed"] == 2 and error.summary["report"] == report_url
    assert (tmp_path / "states-failed" / "report.json").is_file()  # written before the run ended Failed

    run, tasks, artifacts = _runs(state.state_details.flow_run_id)
    assert run.name == "states-failed"
    assert run.state and run.state.is_failed() and run.state.message == state.message
    launches = {task.name: task.state for task in tasks if task.name.startswith("launch-")}
    assert sorted(launches) == [f"launch-{i}" for i in range(5)]
    assert [name for name, s in sorted(launches.items()) if s.is_failed()] == ["launch-3", "launch-4"]
    assert launches["launch-3"].message == "items did not succeed: 1 failed"
    assert all(launches[f"launch-{i}"].is_completed() for i in range(3))

    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 1, artifacts
    assert progress[0].data == 100.0
    assert progress[0].description == "batch states-failed: 5 of 5 items done"
    markdown = next(a for a in artifacts if a.key == "fanout-report")
    # A path as code: the UI shows it as it is (an autolink, <...>, of a path shows its angle brackets).
    assert f"HTML report: `{tmp_path / 'states-failed' / 'report.html'}`" in str(markdown.data)
    assert "<" not in str(markdown.data).split("HTML report:")[1]


def test_a_batch_past_its_deadline_ends_cancelled_with_its_counts_and_report(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.flow import BatchCancelled, fan_out

    monkeypatch.setenv("FANOUT_EMULATOR_HOST", emulator.url)
    items = [{"job": "hello", "args": [f"n{i}", "--sleep", "120"]} for i in range(2)]
    spec = {"batch_id": "states-deadline", "items": items}
    state = fan_out(
        batch=spec, **FLOW_PARAMS, report_to=str(tmp_path), deadline="3s", poll_interval=0.3, return_state=True
    )

    assert state.is_cancelled(), state
    report_url = str(tmp_path / "states-deadline" / "report.json")
    assert state.message == (
        f"batch states-deadline cancelled by its deadline of 3s: 2 of 2 items did not succeed (2 cancelled); "
        f"report: {report_url}"
    )
    cancelled = state.result(raise_on_failure=False)
    assert isinstance(cancelled, BatchCancelled) and str(cancelled) == state.message, cancelled
    summary = cancelled.summary
    assert summary["cancelled"] == 2 and summary["interrupted"] is False  # a deadline, not a signal: exit 1
    run, _tasks, artifacts = _runs(state.state_details.flow_run_id)
    assert run.state and run.state.is_cancelled() and run.state.message == state.message
    assert {a.key for a in artifacts} >= {"fanout-report", "fanout-failed-items", "fanout-progress"}


def test_fail_on_item_failure_false_keeps_the_run_completed(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.flow import fan_out

    monkeypatch.setenv("FANOUT_EMULATOR_HOST", emulator.url)
    state = fan_out(
        batch=_spec("states-lenient"),
        **FLOW_PARAMS,
        report_to=str(tmp_path),
        poll_interval=0.3,
        fail_on_item_failure=False,
        return_state=True,
    )

    assert state.is_completed(), state
    summary = state.result()
    assert (summary["succeeded"], summary["failed"]) == (3, 2)


@pytest.fixture
def no_target(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No project and no emulator anywhere; the SIGTERM handler and log handlers a CLI run sets are undone."""
    monkeypatch.chdir(REPO)
    for name in ("FANOUT_EMULATOR_HOST", "FANOUT_PROJECT", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    with cli_changes_undone(monkeypatch):
        yield


@pytest.mark.usefixtures("no_target")
def test_fan_out_with_no_project_runs_on_the_embedded_emulator(tmp_path: Path) -> None:
    import os

    from controller.flow import fan_out

    spec = {"batch_id": "embedded", "items": [{"job": "hello", "args": ["x"]}]}
    summary = fan_out(batch=spec, report_to=str(tmp_path))

    assert (summary["status"], summary["succeeded"]) == ("succeeded", 1)
    assert (tmp_path / "embedded" / "report.html").is_file()
    assert "FANOUT_EMULATOR_HOST" not in os.environ  # the embedded emulator is gone with the run


@pytest.mark.usefixtures("no_target")
def test_cli_exit_1_without_a_traceback_when_items_failed(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from controller.cli import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec("states-cli")))
    code = main(
        [
            "run", str(spec), "--emulator", emulator.url, "--project", emulator.project,
            "--report-to", str(tmp_path / "reports"), "--poll-interval", "0.3", "--quiet",
        ]
    )  # fmt: skip

    out, err = capsys.readouterr()
    assert code == 1, err
    assert "Traceback" not in out + err
    assert "2 of 5 items did not succeed" in out
