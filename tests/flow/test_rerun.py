"""Rerun what failed, through the ``fan_out`` flow and ``controller.rerun`` against the Cloud Run emulator, in
a local folder and in fake-gcs-server: exactly the failed items run again with their original args and env,
the two reports link to each other, concurrent reruns are all listed, literal secrets are never stored, and a
finished batch run again launches nothing and says so in its flow run's state."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from flowsupport import dump
from google.cloud import run_v2
from testenv import BUCKET, FLOW_PARAMS, PROJECT, REGION

from cloudrun_emulator import Emulator
from controller.batchfolder import open_report, store_report
from controller.catalog import Catalog
from controller.flow import rerun
from controller.ownership import BatchConflict
from controller.report import BatchLink, ItemState, Report
from controller.rerun import RerunError, plan_rerun, rerun_batch_id
from controller.store import Store, open_store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SECRET = "s3cr3t-rerun-value"


def _spec(batch_id: str, *, secret: bool = False) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"key": f"ok-{i}", "job": "hello", "args": [f"n{i}"]} for i in range(2)]
    items += [
        {"key": f"bad-{i}", "job": "flaky", "args": ["--exit-code", "3"], "env": {"MARK": f"mark-{i}"}}
        for i in range(2)
    ]
    if secret:
        items[2]["env"]["TOKEN"] = {"value": SECRET}
    return {"batch_id": batch_id, "defaults": {"timeout": "20s"}, "items": items}


@pytest.fixture(params=["folder", "gcs"])
def where(request: pytest.FixtureRequest, tmp_path: Path, gcs: Any) -> str:
    """A report location: a local folder, or a prefix in fake-gcs-server."""
    return str(tmp_path / "reports") if request.param == "folder" else f"gs://{BUCKET}/rerun-{tmp_path.name}"


@pytest.fixture
def on_emulator(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("FANOUT_EMULATOR_HOST", emulator.url)
    return emulator


def _unique(prefix: str) -> str:
    """A batch id of its own per test run: the emulator's executions outlive a test."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _params(report_to: str) -> dict[str, Any]:
    return {
        **FLOW_PARAMS,
        "report_to": report_to,
        "mode": "per-item",
        "poll_interval": 0.3,
        "fail_on_item_failure": False,
    }


def _report(url: str, gcs: Any) -> Report:
    return open_report(url, gcs).report


def _overrides(emulator: Emulator, job: str, batch_id: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Args and env of the job's executions of this batch, by launch key, through the official client."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    client = run_v2.ExecutionsClient(
        credentials=AnonymousCredentials(), transport="rest", client_options=ClientOptions(api_endpoint=emulator.url)
    )
    found = {}
    for execution in client.list_executions(parent=f"projects/{PROJECT}/locations/{REGION}/jobs/{job}"):
        container = execution.template.containers[0]
        env = {e.name: e.value for e in container.env}
        if env.get("FANOUT_LAUNCH_KEY", "").startswith(f"{batch_id}/"):
            found[env["FANOUT_LAUNCH_KEY"]] = (list(container.args), env)
    return found


def test_rerun_runs_exactly_the_failed_items_and_links_both_ways(
    on_emulator: Emulator, where: str, gcs: Any, tmp_path: Path
) -> None:
    from controller.flow import fan_out

    parent_id = _unique("rr")
    parent = fan_out(batch=_spec(parent_id), **_params(where))
    assert parent["failed"] == 2

    summary = rerun(parent["report"], **_params(where))

    child_id = f"{parent_id}-rerun-1"
    assert summary["batch_id"] == child_id
    assert summary["report"] == open_store(where, gcs).url(child_id, "report.json")
    child = _report(summary["report"], gcs)
    assert [(i.key, i.state) for i in child.items] == [("bad-0", ItemState.FAILED), ("bad-1", ItemState.FAILED)]
    assert child.rerun_of == BatchLink(batch_id=parent_id, report=parent["report"])
    listed = _report(parent["report"], gcs).reruns
    assert [(r.batch_id, r.report, r.items, r.states) for r in listed] == [
        (child_id, summary["report"], 2, [s for s in ItemState if s is not ItemState.SUCCEEDED])
    ]
    # The original args and env overrides, and no hello item ran again.
    ran = _overrides(on_emulator, "flaky", child_id)
    assert sorted((args, env["MARK"]) for args, env in ran.values()) == [
        (["--exit-code", "3"], "mark-0"),
        (["--exit-code", "3"], "mark-1"),
    ]
    assert _overrides(on_emulator, "hello", child_id) == {}

    # A second rerun of the same parent gets the next id; both are listed.
    again = rerun(parent["report"], states=["failed"], **_params(where))
    assert again["batch_id"] == f"{parent_id}-rerun-2"
    assert [r.batch_id for r in _report(parent["report"], gcs).reruns] == [child_id, f"{parent_id}-rerun-2"]


def test_reruns_started_at_once_are_all_listed_with_different_ids(
    on_emulator: Emulator, where: str, gcs: Any, catalog: Catalog, tmp_path: Path
) -> None:
    """The parent's report is updated with generation-matched writes: none of the racing reruns is lost."""
    from controller.flow import fan_out

    parent_id = _unique("race")
    parent = fan_out(batch=_spec(parent_id), **_params(where))
    store = open_store(where, gcs)
    storage = gcs if where.startswith("gs://") else None
    plans = [plan_rerun(parent["report"], storage_client=storage) for _ in range(4)]
    ids: list[str] = []
    start = threading.Barrier(len(plans))

    def begin(index: int) -> None:
        start.wait()
        ids.append(plans[index].start(catalog, store).batch.batch_id)

    threads = [threading.Thread(target=begin, args=(i,)) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(ids) == [f"{parent_id}-rerun-{n}" for n in range(1, 5)]
    assert sorted(r.batch_id for r in _report(parent["report"], gcs).reruns) == sorted(ids)


def test_literal_secrets_are_never_stored_and_need_the_spec_again(
    on_emulator: Emulator, where: str, gcs: Any, catalog: Catalog, tmp_path: Path
) -> None:
    from controller.flow import fan_out

    parent_id = _unique("sec")
    spec = _spec(parent_id, secret=True)
    parent = fan_out(batch=spec, **_params(where))
    store = open_store(where, gcs)
    stored = store.read(parent_id, "spec.json")
    assert stored is not None and SECRET.encode() not in stored
    assert json.loads(stored)["items"][2]["env"]["TOKEN"] == {"withheld": "a literal secret; not stored"}

    storage = gcs if where.startswith("gs://") else None
    with pytest.raises(RerunError, match=r"bad-0: TOKEN\); give the batch's spec file again with --spec FILE"):
        plan_rerun(parent["report"], storage_client=storage)
    with pytest.raises(RerunError, match="not the spec batch"):
        rerun(parent["report"], spec=_spec(parent_id), **_params(where))  # the spec without its secret

    summary = rerun(parent["report"], spec=spec, **_params(where))
    ran = _overrides(on_emulator, "flaky", summary["batch_id"])
    assert sorted(env.get("TOKEN", "") for _, env in ran.values()) == ["", SECRET]  # Cloud Run got the value
    child_spec = store.read(summary["batch_id"], "spec.json")
    assert child_spec is not None and SECRET.encode() not in child_spec
    child = _report(summary["report"], gcs)
    assert SECRET not in dump(child)


def test_a_finished_batch_run_again_launches_nothing_and_says_so_in_its_state(
    on_emulator: Emulator, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from controller.flow import fan_out

    batch_id = _unique("finished")
    params = {**_params(str(tmp_path)), "fail_on_item_failure": True}
    first = fan_out(batch=_spec(batch_id), return_state=True, **params)
    assert first.is_failed()
    before = len(_overrides(on_emulator, "flaky", batch_id))

    state = fan_out(batch=_spec(batch_id), return_state=True, **params)

    url = str(tmp_path / batch_id / "report.json")
    report = open_report(url).report
    when = report.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = state.message.splitlines()
    assert (
        lines[0]
        == f"batch {batch_id} already finished at {when} (2 of 4 items did not succeed): nothing was launched."
    )
    assert lines[1] == f"report: {url}"
    assert lines[2].startswith("to run it anew:        fanout run SPEC --batch-id b-")
    assert lines[3] == f"to rerun its failures: fanout rerun {url}"
    assert len(_overrides(on_emulator, "flaky", batch_id)) == before
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state is not None and run.state.is_failed() and run.state.message == state.message


def test_a_resumed_parent_keeps_the_reruns_listed_in_its_report(
    on_emulator: Emulator, where: str, gcs: Any, catalog: Catalog
) -> None:
    """A batch cut short by its deadline leaves a report; a rerun is listed in it; running the batch again
    resumes it (some launches never started) and rewrites its report, with that rerun still listed."""
    from controller.flow import BatchCancelled, fan_out

    parent_id = _unique("resume")
    items = [{"key": "bad-0", "job": "flaky", "args": ["--exit-code", "3"]}]
    items += [{"key": f"slow-{i}", "job": "hello", "args": ["x", "--sleep", "6"]} for i in range(2)]
    spec = {"batch_id": parent_id, "defaults": {"timeout": "30s"}, "items": items}
    with pytest.raises(BatchCancelled, match=f"batch {parent_id} cancelled by its deadline of 2s") as raised:
        fan_out(batch=spec, **{**_params(where), "max_running_tasks": 1, "deadline": "2s"})
    cut = raised.value.summary
    first = _report(cut["report"], gcs)
    assert any(item.state is ItemState.NOT_LAUNCHED for item in first.items), [i.state for i in first.items]

    storage = gcs if where.startswith("gs://") else None
    listed = plan_rerun(cut["report"], storage_client=storage).start(catalog, open_store(where, gcs))
    resumed = fan_out(batch=spec, **_params(where))

    report = _report(resumed["report"], gcs)
    assert report.flow_run_id != first.flow_run_id  # written again, by the run that resumed the batch
    states = {item.key: item.state for item in report.items}
    assert ItemState.NOT_LAUNCHED not in states.values(), states  # what never started has run now
    assert [(r.batch_id, r.items) for r in report.reruns] == [(listed.batch.batch_id, 3)]
    page = open_store(where, gcs).read(parent_id, "report.html")
    assert page is not None and f"rerun as {listed.batch.batch_id} (report: ".encode() in page


class _ListsARerunFirst:
    """The store, where another rerun lists itself in the report just before this writer's first
    conditional write: the race that the generation-matched write must not lose."""

    def __init__(self, store: Store, list_rerun: Callable[[], object]) -> None:
        self.store, self.list_rerun, self.raced = store, list_rerun, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def write_if(self, batch_id: str, name: str, data: bytes, generation: str | None, **kwargs: Any) -> str:
        if not self.raced:
            self.raced = True
            self.list_rerun()
        return self.store.write_if(batch_id, name, data, generation, **kwargs)


def test_a_report_written_again_keeps_a_rerun_listed_while_it_was_written(
    on_emulator: Emulator, where: str, gcs: Any, catalog: Catalog
) -> None:
    from controller.flow import fan_out

    parent = fan_out(batch=_spec(_unique("race-resume")), **_params(where))
    store = open_store(where, gcs)
    storage = gcs if where.startswith("gs://") else None
    first = plan_rerun(parent["report"], storage_client=storage).start(catalog, store)
    stored = _report(parent["report"], gcs)
    again = stored.model_copy(update={"reruns": [], "problems": ["written again"]})

    another = plan_rerun(parent["report"], storage_client=storage)
    racing = _ListsARerunFirst(store, lambda: another.start(catalog, store))
    written, url, generation = store_report(cast(Store, racing), again)

    assert racing.raced and url == parent["report"] and generation is not None
    assert [r.batch_id for r in written.reruns] == [first.batch.batch_id, rerun_batch_id(stored.batch_id, 2)]
    assert _report(url, gcs) == written and written.problems == ["written again"]


def test_a_refused_rerun_is_not_listed(on_emulator: Emulator, where: str, gcs: Any) -> None:
    """A rerun refused after it was listed (here its id is the parent's own, a batch of another spec) is
    taken off the parent's list, in report.json and report.html; a refused resume of a rerun that ran is not."""
    from controller.flow import fan_out

    parent_id = _unique("refused")
    parent = fan_out(batch=_spec(parent_id), **_params(where))

    with pytest.raises(BatchConflict, match="already used for a different spec"):
        rerun(parent["report"], batch_id=parent_id, **_params(where))
    assert _report(parent["report"], gcs).reruns == []
    page = open_store(where, gcs).read(parent_id, "report.html")
    assert page is not None and b'id="lineage"' not in page

    child = rerun(parent["report"], states="failed", **_params(where))
    page = open_store(where, gcs).read(parent_id, "report.html")
    assert page is not None and f'rerun as {child["batch_id"]} (report: '.encode() in page
    with pytest.raises(BatchConflict):  # the rerun's id again, for items of another state: refused, kept
        rerun(parent["report"], states="succeeded", batch_id=child["batch_id"], **_params(where))
    assert [r.batch_id for r in _report(parent["report"], gcs).reruns] == [child["batch_id"]]
