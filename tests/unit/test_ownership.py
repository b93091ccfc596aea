"""A batch has one owner at a time: creating, refusing, taking over after the lease ran out, renewing, losing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.batch import BatchRunner
from controller.catalog import Catalog
from controller.ownership import BATCH_STATE, BatchConflict, BatchOwned, Owner, acquire
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


def test_renewal_keeps_trying_an_unreachable_store_until_the_lease_runs_out(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path), Clock()
    lease, _ = acquire(store, "b", spec_digest="d1", fields=FIELDS, owner=Owner(host="a", pid=1), now=clock, seconds=60)
    (tmp_path / "b").rename(tmp_path / "b.away")
    (tmp_path / "b").write_text("a file where the batch folder was: every write fails")
    try:
        clock.now = T0 + timedelta(seconds=30)
        assert lease.renew() and lease.lost is None
        clock.now = T0 + timedelta(seconds=61)
        assert not lease.renew()
        assert lease.lost is not None and "lease ran out" in lease.lost
    finally:
        (tmp_path / "b").unlink()
        (tmp_path / "b.away").rename(tmp_path / "b")


class RecordingCloud:
    """Stands in for CloudRun where the test shows that it is never called."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def run(self, launch: Any, *, since: datetime) -> Any:
        self.runs.append(launch.key)
        raise AssertionError("RunJob sent by a controller that no longer holds the batch")


def test_a_runner_whose_lease_ran_out_sends_no_run_job(tmp_path: Path) -> None:
    catalog = Catalog.from_jobs_dir()
    batch = load_batch({"batch_id": "b", "items": [{"key": "a", "job": "hello"}]}, catalog)
    clock, cloud = Clock(), RecordingCloud()
    runner = BatchRunner(plan(batch, catalog), cloud, LocalStore(tmp_path), now=clock)  # type: ignore[arg-type]
    assert not runner.open_batch(project="p", region="r")
    nonce = json.loads(LocalStore(tmp_path).read("b", BATCH_STATE) or b"")["nonce"]
    assert runner.states[0].launch.key == f"b/{nonce}/00000"
    assert dict(runner.states[0].launch.env)["FANOUT_LAUNCH_KEY"] == f"b/{nonce}/00000"
    clock.now = T0 + timedelta(seconds=45)  # the renewal thread has not run (it waits 20 s of real time)
    state = runner.launch(runner.states[0])
    assert cloud.runs == []
    assert state.error is not None and "no longer holds the batch" in state.error
    runner.close()
