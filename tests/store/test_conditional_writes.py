"""Conditional writes (``Store.write_if``), on which a batch's single owner rests: create-only, and replace only
the generation read. In a local folder between threads and processes; on GCS through fake-gcs-server."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
from testenv import BUCKET

from controller.store import GcsStore, LocalStore, Store, StoreConflict, StoreError


def _stores(tmp_path: Path, gcs: Any | None) -> Store:
    return LocalStore(tmp_path) if gcs is None else GcsStore(gcs, BUCKET, f"conditional-{tmp_path.name}")


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.emulator)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return _stores(tmp_path, request.getfixturevalue("gcs") if request.param == "gcs" else None)


def test_create_only_and_generation_matched_replace(store: Store) -> None:
    assert store.read_versioned("b", "batch.json") is None
    first = store.write_if("b", "batch.json", b'{"n": 1}', None)
    with pytest.raises(StoreConflict):
        store.write_if("b", "batch.json", b'{"n": 2}', None)  # create-only: it exists
    assert store.read_versioned("b", "batch.json") == (b'{"n": 1}', first)
    second = store.write_if("b", "batch.json", b'{"n": 3}', first)
    assert second != first
    with pytest.raises(StoreConflict):
        store.write_if("b", "batch.json", b'{"n": 4}', first)  # stale generation: someone wrote since
    assert store.read_versioned("b", "batch.json") == (b'{"n": 3}', second)


def test_of_many_threads_creating_at_once_exactly_one_wins(store: Store) -> None:
    start = threading.Barrier(8)
    wins: list[int] = []

    def create(n: int) -> None:
        start.wait()
        try:
            store.write_if("race", "batch.json", f'{{"n": {n}}}'.encode(), None)
        except StoreConflict:
            return
        wins.append(n)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    found = store.read_versioned("race", "batch.json")
    assert found is not None and found[0] == f'{{"n": {wins[0]}}}'.encode()


def _increment(root: str, times: int) -> None:
    """Read-modify-write ``times`` increments of a counter, retrying each lost compare-and-swap."""
    store = LocalStore(root)
    for _ in range(times):
        while True:
            found = store.read_versioned("cas", "counter.json")
            assert found is not None
            data, generation = found
            try:
                store.write_if("cas", "counter.json", str(int(data) + 1).encode(), generation)
                break
            except StoreConflict:
                continue


def test_local_compare_and_swap_loses_no_update_between_processes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_if("cas", "counter.json", b"0", None)
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=_increment, args=(str(tmp_path), 25)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert store.read("cas", "counter.json") == b"75"


def test_a_missing_bucket_is_a_store_error_naming_it(gcs: Any) -> None:
    store = GcsStore(gcs, "no-such-bucket", "x")
    assert store.read_versioned("b", "batch.json") is None
    with pytest.raises(StoreError, match=r"cannot write gs://no-such-bucket/x/b/batch.json"):
        store.write_if("b", "batch.json", b"{}", None)
