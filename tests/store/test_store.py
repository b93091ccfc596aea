"""Report stores: a local folder and a GCS bucket (fake-gcs-server through google-cloud-storage)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from testenv import BUCKET

from controller.store import GCS_CHUNK_BYTES, GcsStore, LocalStore, StoreError, open_store, read_url


def _chunks(total: int, size: int = 2**20) -> list[bytes]:
    """``total`` bytes of varied content, in pieces of ``size``."""
    out, n = [], 0
    while n < total:
        piece = hashlib.sha256(str(n).encode()).digest() * (min(size, total - n) // 32 + 1)
        out.append(piece[: min(size, total - n)])
        n += len(out[-1])
    return out


def test_local_store_streams_chunks_and_replaces_whole(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    url = store.write("b1", "report.json", iter([b"{", b'"a": 1', b"}"]))
    assert Path(url).read_bytes() == b'{"a": 1}'
    store.write("b1", "report.json", b"{}")
    assert store.read("b1", "report.json") == b"{}"
    assert store.read("b1", "missing.json") is None
    # A write that fails half-way leaves the previous object and no temporary file behind.

    def failing() -> Any:
        yield b"partial"
        raise OSError("disk full")

    with pytest.raises(StoreError, match="disk full"):
        store.write("b1", "report.json", failing())
    assert store.read("b1", "report.json") == b"{}"
    assert os.listdir(tmp_path / "b1") == ["report.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_local_files_honour_the_umask_like_any_new_file(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        store = LocalStore(tmp_path)
        written = [Path(store.write("b", name, b"{}")) for name in ("report.json", "results.jsonl")]
        written.append(Path(store.write("b", "report.html", iter([b"<html>"]))))
        (tmp_path / "b" / "results").mkdir()
        beside = tmp_path / "b" / "results" / "0.json"
        beside.write_text("1")  # what a task's program or the runner writes: an ordinary new file
    finally:
        os.umask(previous)
    assert {path.stat().st_mode & 0o777 for path in written} == {beside.stat().st_mode & 0o777} == {0o666 & ~umask}


@pytest.mark.parametrize("size", [3 * 2**20, GCS_CHUNK_BYTES + 2**20 + 17], ids=["multipart", "resumable"])
def test_gcs_store_streams_chunks(gcs: Any, size: int) -> None:
    store = GcsStore(gcs, BUCKET, "store-tests")
    pieces = _chunks(size)
    url = store.write("b2", f"blob-{size}.bin", iter(pieces), content_type="application/octet-stream")
    assert url == f"gs://{BUCKET}/store-tests/b2/blob-{size}.bin"
    data = read_url(url, gcs)
    assert len(data) == size
    assert data == b"".join(pieces)
    blob = gcs.bucket(BUCKET).get_blob(f"store-tests/b2/blob-{size}.bin")
    assert blob.content_type == "application/octet-stream"
    assert read_url(url, gcs, limit=size) == data
    with pytest.raises(StoreError, match=f"larger than {size - 1:,} bytes"):
        read_url(url, gcs, limit=size - 1)


def test_gcs_store_reads_and_bytes(gcs: Any) -> None:
    store = open_store(f"gs://{BUCKET}/store-tests/", gcs)
    assert isinstance(store, GcsStore)
    store.write("b3", "report.json", b'{"ok": true}')
    assert store.read("b3", "report.json") == b'{"ok": true}'
    assert store.read("b3", "nothing.json") is None


def test_gcs_store_names_a_missing_bucket(gcs: Any) -> None:
    store = GcsStore(gcs, "no-such-bucket", "x")
    with pytest.raises(StoreError, match=r"cannot write gs://no-such-bucket/x/b4/report.json"):
        store.write("b4", "report.json", iter([b"{}"]))


@pytest.mark.parametrize(
    ("destination", "message"),
    [("gs://", "names no bucket"), ("s3://bucket/x", "unsupported report destination"), ("", "destination is empty")],
)
def test_open_store_rejects_bad_destinations(destination: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(destination, object())


def test_the_test_storage_server_keeps_answering_past_its_log_pipe(gcs: Any) -> None:
    # fake-gcs-server logs a line per request to a pipe; undrained, it froze after a few hundred requests and
    # every later GCS test of the session timed out (tests/testenv.py drains it).
    bucket = gcs.bucket(BUCKET)
    for _ in range(1500):
        assert bucket.blob("store-tests/never-written").exists() is False
