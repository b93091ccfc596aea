"""A batch has one owner at a time: creating, refusing, taking over after the lease ran out, renewing, losing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core.exceptions import RetryError

from controller.batch import BatchRunner
from controller.catalog import Catalog
from controller.ownership import BATCH_STATE, BatchConflict, BatchOwned, LeaseLost, Owner, acquire
from controller.plan import plan
from controller.spec import load_batch
from controller.store import LocalStore

T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
FIELDS = {"started_at": T0.isoformat()}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _acquire(store: LocalStore, clock: Clock, owner: Owner, digest: str = "d1") -> tuple[object, bool]:
    return acquire(store, "b", spec_digest=digest, fields=FIELDS, owner=owner, now=clock)


def test_a_live_lease_refuses_a_second_controller_and_says_who_holds_it(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path), Clock()
    first = Owner(host="alpha", pid=4242, flow_run="run-1")
    lease, resumed = acquire(store, "b", spec_digest="d1", fields=FIELDS, owner=first, now=clock, seconds=60)
    assert not resumed
    record = json.loads(store.read("b", BATCH_STATE) or b"")
    assert record["owner"]["host"] == "alpha" and len(record["nonce"]) == 12
    clock.now = T0 + timedelta(seconds=39)
    assert lease.valid()
    clock.now = T0 + timedelta(seconds=41)
    assert not lease.valid()  # under a third of the lease left: no more RunJob until it is renewed
    clock.now = T0 + timedelta(seconds=59)
    held = r"host alpha, pid 4242, flow run run-1\); its lease runs until 2026-11-30T06:01"
    with pytest.raises(BatchOwned, match=held):
        _acquire(store, clock, Owner(host="beta", pid=1))


def test_an_expired_lease_is_taken_over_and_the_old_owner_loses_it(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path), Clock()
    old, _ = acquire(store, "b", spec_digest="d1", fields=FIELDS, owner=Owner(host="a", pid=1), now=clock, seconds=60)
    nonce = old.record["nonce"]
    clock.now = T0 + timedelta(seconds=61)
    assert not old.valid()
    new, resumed = acquire(
        store, "b", spec_digest="d1", fields=FIELDS, owner=Owner(host="b", pid=2), now=clock, seconds=60
    )
    assert resumed and new.record["nonce"] == nonce  # the same batch: its launch keys stay
    assert not old.renew()  # its generation is stale
    assert old.lost is not None and "took the batch over" in old.lost
    assert new.renew() and new.until == clock.now + timedelta(seconds=60)


def test_a_released_lease_lets_the_next_run_in_at_once(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path), Clock()
    lease, _ = acquire(store, "b", spec_digest="d1", fields=FIELDS, owner=Owner(host="a", pid=1), now=clock)
    lease.release()
    _, resumed = _acquire(store, clock, Owner(host="b", pid=2))
    assert resumed


def test_another_spec_is_refused_without_writing(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path), Clock()
    lease, _ = acquire(store, "b", spec_digest="d1", fields=FIELDS, owner=Owner(host="a", pid=1), now=clock)
    lease.release()
    before = store.read("b", BATCH_STATE)
    with pytest.raises(BatchConflict, match="already used for a different spec") as refused:
        _acquire(store, clock, Owner(host="b", pid=2), digest="d2")
    assert not isinstance(refused.value, BatchOwned)
    assert store.read("b", BATCH_STATE) == before


def test_a_corrupt_record_is_a_conflict_naming_the_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("b", BATCH_STATE, b"{not json")
    with pytest.raises(BatchConflict, match=r"b/batch.json is not a batch record"):
        _acquire(store, Clock(), Owner(host="b", pid=2))


def test_a_dead_holder_on_this_machine_is_taken_over_before_its_lease_ends(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    dead = Owner.this_process()
    dead = Owner(host=dead.host, pid=int(gone.stdout), machine=dead.machine)
    if dead.machine is None:
        pytest.skip("no /proc: a dead holder cannot be told from a live one here")
    store, clock = LocalStore(tmp_path), Clock()
    acquire(store, "b", spec_digest="d1", fields=FIELDS, owner=dead, now=clock)
    _, resumed = _acquire(store, clock, Owner.this_process())
    assert resumed
    # A holder on another machine is never presumed dead.
    assert not Owner(host="elsewhere", pid=int(gone.stdout), machine="other-boot/1").known_dead()


class RecordingCloud:
    """Stands in for CloudRun: calls the lease's guard right before it would send RunJob, as CloudRun.run
    does, and records the RunJob calls that got past it."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def run(self, launch: Any, *, since: datetime, guard: Any = None) -> Any:
        if guard is not None:
            guard()
        self.runs.append(launch.key)
        raise AssertionError("stop here: a RunJob was sent")


def _runner(tmp_path: Path, clock: Clock, cloud: RecordingCloud) -> BatchRunner:
    catalog = Catalog.from_jobs_dir()
    batch = load_batch({"batch_id": "b", "items": [{"key": "a", "job": "hello"}]}, catalog)
    runner = BatchRunner(plan(batch, catalog), cloud, LocalStore(tmp_path), now=clock)  # type: ignore[arg-type]
    assert not runner.open_batch(project="p", region="r")
    return runner


def test_a_runner_whose_batch_was_taken_over_sends_no_run_job_and_writes_nothing(tmp_path: Path) -> None:
    clock, cloud = Clock(), RecordingCloud()
    runner = _runner(tmp_path, clock, cloud)
    nonce = json.loads(LocalStore(tmp_path).read("b", BATCH_STATE) or b"")["nonce"]
    assert runner.states[0].launch.key == f"b/{nonce}/00000"
    assert dict(runner.states[0].launch.env)["FANOUT_LAUNCH_KEY"] == f"b/{nonce}/00000"
    # This controller is paused past its lease (the renewal thread waits 20 s of real time: it has not run);
    # meanwhile another one takes the batch over and writes its report.
    clock.now = T0 + timedelta(seconds=61)
    _acquire(LocalStore(tmp_path), clock, Owner(host="b", pid=2), digest=runner.plan.batch.digest)
    (tmp_path / "b" / "report.json").write_text("the new owner's report")
    state = runner.launch(runner.states[0])
    assert cloud.runs == []
    assert state.error is not None and "no longer holds the batch" in state.error
    assert "another controller took the batch over" in state.error
    with pytest.raises(LeaseLost) as lost:
        runner.store.write("b", "report.json", b"the old owner's report")
    assert lost.value.taken
    assert (tmp_path / "b" / "report.json").read_text() == "the new owner's report"
    runner.close()


def test_a_lease_that_ran_short_with_no_new_owner_is_renewed_before_run_job(tmp_path: Path) -> None:
    clock, cloud = Clock(), RecordingCloud()
    runner = _runner(tmp_path, clock, cloud)
    clock.now = T0 + timedelta(seconds=75)  # paused past the lease, but nobody took the batch meanwhile
    with pytest.raises(AssertionError, match="a RunJob was sent"):
        runner.launch(runner.states[0])
    assert cloud.runs == [runner.states[0].launch.key]
    assert runner.lease is not None and runner.lease.until == T0 + timedelta(seconds=75 + 60)
    runner.close()


class FailingStore(LocalStore):
    """A store whose writes of batch.json fail as ``error`` says, until it is set to None."""

    error: Exception | None = None

    def write_if(self, batch_id: str, name: str, data: bytes, generation: str | None, **kwargs: Any) -> str:
        if self.error is not None:
            raise self.error
        return super().write_if(batch_id, name, data, generation, **kwargs)


@pytest.mark.parametrize(
    "error",
    [
        RetryError("Timeout of 120.0s exceeded", cause=ConnectionError("refused")),
        ConnectionError("refused"),
        RuntimeError("any other failure of the store"),
    ],
    ids=["RetryError", "ConnectionError", "RuntimeError"],
)
def test_renewal_survives_any_store_error_until_the_lease_would_run_out(tmp_path: Path, error: Exception) -> None:
    store, clock = FailingStore(tmp_path), Clock()
    lease, _ = acquire(store, "b", spec_digest="d1", fields=FIELDS, owner=Owner(host="a", pid=1), now=clock)
    store.error = error
    clock.now = T0 + timedelta(seconds=30)
    assert not lease.renew() and lease.lost is None  # not renewed, not lost: tried again
    store.error = None
    clock.now = T0 + timedelta(seconds=50)
    assert lease.renew() and lease.until == T0 + timedelta(seconds=110)  # the store came back in time
    store.error = error
    clock.now = T0 + timedelta(seconds=111)
    assert not lease.renew()
    assert lease.lost is not None and "lease ran out" in lease.lost and not lease.taken
    with pytest.raises(LeaseLost, match="lease ran out"):
        lease.check()


def test_the_renewal_thread_keeps_trying_after_a_store_error(tmp_path: Path) -> None:
    store = FailingStore(tmp_path)
    lease, _ = acquire(
        store,
        "b",
        spec_digest="d1",
        fields=FIELDS,
        owner=Owner(host="a", pid=1),
        now=lambda: datetime.now(UTC),
        seconds=1.2,
    )
    store.error = RetryError("Timeout of 120.0s exceeded", cause=ConnectionError("refused"))
    lease.start()
    first = lease.until
    try:
        time.sleep(0.5)  # past the first renewal (0.4 s), which failed; the thread goes on
        store.error = None
        deadline = time.monotonic() + 10
        while lease.until == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.until > first and lease.lost is None
    finally:
        lease.release()


class UnlistableCloud(RecordingCloud):
    """A Cloud Run whose executions cannot be listed (it does not answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.lists = 0

    def find_launched(self, job: str, keys: Any, *, since: datetime, older: Any = None) -> Any:
        self.lists += 1
        raise requests.ConnectionError("connection refused")


def test_a_resumed_batch_whose_executions_cannot_be_listed_launches_nothing(tmp_path: Path) -> None:
    clock, cloud = Clock(), UnlistableCloud()
    first = _runner(tmp_path, clock, cloud)
    assert first.adopt_existing() == 0 and cloud.lists == 0  # a batch just made: none can carry its keys
    first.close()
    catalog = Catalog.from_jobs_dir()
    batch = load_batch({"batch_id": "b", "items": [{"key": "a", "job": "hello"}]}, catalog)
    again = BatchRunner(plan(batch, catalog), cloud, LocalStore(tmp_path), now=clock)  # type: ignore[arg-type]
    assert again.open_batch(project="p", region="r")  # resumed
    assert again.adopt_existing() == 0 and cloud.lists == 1
    assert again.pending() == [] and cloud.runs == []
    assert (again.states[0].error or "").startswith("not started: what the batch already started could not be listed")
    assert any("launches of hello not started" in problem for problem in again.problems)
    again.close()
