"""Results as they finish, from the flow: ``controller.stream.stream`` yields each item's result as soon as its
task ended, packed items before their execution ends; and anyone can attach to the running batch by its
report location and read its values as they land in ``results/`` (``follow_results``, ``fanout results
--follow``), then its final records. A real Prefect flow run on the Cloud Run emulator, the report in
fake-gcs-server read through google-cloud-storage."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from testenv import BUCKET, FLOW_PARAMS

from cloudrun_emulator import Emulator
from controller.cli import main
from controller.report import ItemState
from controller.results import Landed, ResultRecord, follow_results
from controller.stream import stream

# One packed execution of three tasks that start together and end seconds apart: quick, then mid, then slow.
ITEMS = [
    {"key": "slow", "job": "hello", "args": ["slow", "--sleep", "7", "--result"]},
    {"key": "quick", "job": "hello", "args": ["quick", "--result"]},
    {"key": "mid", "job": "hello", "args": ["mid", "--sleep", "3.5", "--result"]},
]


def test_results_stream_as_tasks_end_and_a_follower_sees_them_land(
    emulator: Emulator, gcs: Any, prefect_server: None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("FANOUT_EMULATOR_HOST", emulator.url)
    location = f"gs://{BUCKET}/stream-tests/results-stream"
    spec = {"batch_id": "results-stream", "items": ITEMS}
    results = stream(spec, report_to=f"gs://{BUCKET}/stream-tests", mode="packed", poll_interval=0.3, **FLOW_PARAMS)

    followed: list[tuple[Landed | ResultRecord, datetime]] = []

    def follow() -> None:
        for record in follow_results(location, gcs, follow=True, poll_seconds=0.3, timeout_seconds=300):
            followed.append((record, datetime.now(UTC)))

    follower = threading.Thread(target=follow)
    follower.start()
    received = [(item, datetime.now(UTC)) for item in results]
    follower.join(timeout=300)

    assert results.report is not None
    report = results.report
    assert [launch.packed for launch in report.launches] == [True]
    last_end = max(item.end_time for item in report.items if item.end_time)
    # Completion order, each with the value its task wrote; the first before the execution's last task ended.
    assert [item.key for item, _ in received] == ["quick", "mid", "slow"]
    assert [item.result for item, _ in received] == [["Hello, quick!"], ["Hello, mid!"], ["Hello, slow!"]]
    assert all(item.state is ItemState.SUCCEEDED for item, _ in received)
    assert received[0][1] < last_end, (received[0][1], last_end)

    # The follower saw values land while the batch ran, then every item's final record in spec order.
    landed = [(record, at) for record, at in followed if isinstance(record, Landed)]
    final = [record for record, _ in followed if isinstance(record, ResultRecord)]
    assert landed and landed[0][1] < last_end
    assert {record.key for record, _ in landed} <= {"quick", "mid", "slow"}
    assert [(r.key, r.state, r.result) for r in final] == [
        ("slow", ItemState.SUCCEEDED, ["Hello, slow!"]),
        ("quick", ItemState.SUCCEEDED, ["Hello, quick!"]),
        ("mid", ItemState.SUCCEEDED, ["Hello, mid!"]),
    ]

    # The CLI prints the ended batch's records as JSON lines.
    capsys.readouterr()
    assert main(["results", location]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["key"], line["state"]) for line in lines] == [(key, "succeeded") for key in ("slow", "quick", "mid")]


def test_results_of_no_batch_is_a_user_error(tmp_path: Any, capsys: Any) -> None:
    assert main(["results", str(tmp_path / "reports" / "nothing-here")]) == 2
    assert "no batch at" in capsys.readouterr().err
