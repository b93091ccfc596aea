"""Where reports, manifests and batch state live: a GCS prefix or a local folder.

Layout under the destination: ``<batch-id>/report.json``, ``report.html``, ``batch.json`` (what a resumed
run needs to find the batch again, and who owns it now) and ``manifests/<launch>/<chunk>.json`` (packed
launches). Every write replaces the object whole: GCS object writes are atomic, and local writes go through a
temporary file and ``os.replace``.

``write_if`` is the one conditional write, for ``batch.json``: create-only, or replace only the generation
that was read. On GCS that is ``if_generation_match`` (0 for create-only); in a local folder, a
compare-and-swap under an exclusive ``flock`` of a lock file beside the object (the kernel releases it when
its holder dies, so a crash never leaves the object locked).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from controller.retry import api_error_message


class StoreError(Exception):
    """A report destination could not be used; the message says which and why."""


class StoreConflict(Exception):
    """A conditional write lost: the object exists (create-only), or changed since the generation read."""


Data = bytes | Iterable[bytes]
"""What ``Store.write`` takes: the bytes, or an iterable of byte chunks that is streamed, never joined."""

# A streamed object goes to GCS in resumable chunks of this size once it is larger, so no more of it than a
# chunk is in memory at once (the client reads a multipart upload whole). A multiple of 256 KiB, as GCS asks.
GCS_CHUNK_BYTES = 8 * 2**20


class Store(Protocol):
    def url(self, batch_id: str, name: str = "") -> str: ...

    def write(self, batch_id: str, name: str, data: Data, content_type: str = "application/json") -> str: ...

    def read(self, batch_id: str, name: str) -> bytes | None: ...

    def write_many(self, batch_id: str, files: list[tuple[str, bytes]]) -> None: ...

    def list_sizes(self, batch_id: str, folder: str) -> Iterator[tuple[str, int]]:
        """``(name, size in bytes)`` of every object under ``<batch-id>/<folder>/``, names relative to the
        batch, in one listing streamed page by page (no object is read)."""
        ...

    def read_versioned(self, batch_id: str, name: str) -> tuple[bytes, str] | None:
        """The object and its generation (an opaque token for ``write_if``), or None when there is none."""
        ...

    def write_if(
        self, batch_id: str, name: str, data: bytes, generation: str | None, *, deadline: float | None = None
    ) -> str:
        """Write only if the object is still at ``generation`` (None: only if it does not exist); returns
        the new generation. Raises StoreConflict when another writer got there first, StoreError when the
        store could not be reached (within ``deadline`` seconds, when given: a lease's renewal is no use
        once the lease has run out)."""
        ...


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``os.umask`` sets it, and another
    thread creating a file meanwhile would get the wrong mode)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class LocalStore:
    """A folder on this machine. Files get the mode any new file gets (0666 less the umask), as the results
    the runner writes beside them do; the temporary file each write goes through is 0600 until then."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.file_mode = 0o666 & ~_umask()

    def url(self, batch_id: str, name: str = "") -> str:
        return str(self.root / batch_id / name) if name else str(self.root / batch_id)

    def write(self, batch_id: str, name: str, data: Data, content_type: str = "application/json") -> str:
        path = self.root / batch_id / name
        try:
            return self._write(path, data)
        except OSError as exc:  # a read-only folder, a full disk: say which file and why
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None

    def _write(self, path: Path, data: Data) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in (data,) if isinstance(data, bytes) else data:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
                os.fchmod(handle.fileno(), self.file_mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(path)

    def read(self, batch_id: str, name: str) -> bytes | None:
        try:
            return (self.root / batch_id / name).read_bytes()
        except FileNotFoundError:
            return None

    def write_many(self, batch_id: str, files: list[tuple[str, bytes]]) -> None:
        for name, data in files:
            self.write(batch_id, name, data)

    def list_sizes(self, batch_id: str, folder: str) -> Iterator[tuple[str, int]]:
        base = self.root / batch_id
        for directory, _, names in os.walk(base / folder):
            for name in names:
                if name.startswith("."):  # a write still in progress (``_write``'s temporary file) or a lock
                    continue
                path = Path(directory) / name
                yield path.relative_to(base).as_posix(), path.stat().st_size

    # A local object's generation is the digest of its bytes: every write of batch.json carries a fresh lease
    # time, so two generations never have the same bytes.
    def read_versioned(self, batch_id: str, name: str) -> tuple[bytes, str] | None:
        data = self.read(batch_id, name)
        return None if data is None else (data, _digest(data))

    def write_if(
        self, batch_id: str, name: str, data: bytes, generation: str | None, *, deadline: float | None = None
    ) -> str:
        # ``deadline`` is not needed here: a local write either happens at once or fails at once.
        path = self.root / batch_id / name
        with self._locked(path):
            current = self.read(batch_id, name)
            if generation is None and current is not None:
                raise StoreConflict(f"{path} exists already")
            if generation is not None and (current is None or _digest(current) != generation):
                raise StoreConflict(f"{path} changed since it was read")
            self.write(batch_id, name, data)
        return _digest(data)

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """Hold an exclusive lock on ``.<name>.lock`` beside ``path``: between threads (each opens its own
        file description) and processes of this machine alike."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _unreachable() -> tuple[type[BaseException], ...]:
    """What a GCS call raises when the service did not answer or refused it: the client's retry giving up
    (RetryError is no GoogleAPICallError), an API error, or a transport error raised without a retry."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    return (gexc.GoogleAPIError, requests.RequestException, auth_exc.GoogleAuthError, OSError)


def _why(exc: BaseException) -> str:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.RetryError) and exc.cause is not None:
        return f"no answer in time ({type(exc.cause).__name__}: {api_error_message(exc.cause)})"
    if isinstance(exc, gexc.GoogleAPICallError):
        return api_error_message(exc)
    return f"{type(exc).__name__}: {exc}"


# Once a call found GCS unreachable for its whole retry deadline, the next calls try once each, this long,
# until one gets an answer: a batch ending during an outage says so in seconds, not in minutes of retries.
OUTAGE_TIMEOUT = 10.0


class GcsStore:
    """A ``gs://bucket/prefix`` through google-cloud-storage."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.bucket = client.bucket(bucket)
        self.outage: str | None = None  # why the last call could not reach GCS; None once one got through

    def _policy(self, deadline: float | None = None) -> tuple[Any, float]:
        """The retry and per-request timeout of the next call: the client's default retry, shortened to
        ``deadline`` seconds; a single short try while GCS is known to be out."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        if self.outage is not None:
            deadline = min(deadline or OUTAGE_TIMEOUT, OUTAGE_TIMEOUT)
            return DEFAULT_RETRY.with_timeout(deadline), deadline
        if deadline is None:
            return DEFAULT_RETRY, 60.0
        return DEFAULT_RETRY.with_timeout(deadline), min(60.0, deadline)

    @contextmanager
    def _answered(self, what: str, url: str) -> Iterator[None]:
        """Turn any failure to reach GCS into a StoreError that says ``what`` failed where, and keep track
        of the outage it reveals."""
        from google.api_core import exceptions as gexc

        # The answers a caller reads as such: an object that does not exist (to a read), or at another
        # generation than the one asked for.
        answers = (gexc.NotFound, gexc.PreconditionFailed) if what == "read" else (gexc.PreconditionFailed,)
        try:
            yield
        except answers:
            self.outage = None  # GCS answered
            raise
        except _unreachable() as exc:
            if not isinstance(exc, gexc.ClientError):
                self.outage = _why(exc)
            raise StoreError(f"cannot {what} {url}: {_why(exc)}") from None
        self.outage = None

    def _object(self, batch_id: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, batch_id, name) if part)

    def url(self, batch_id: str, name: str = "") -> str:
        return f"gs://{self.bucket_name}/{self._object(batch_id, name)}"

    def write(self, batch_id: str, name: str, data: Data, content_type: str = "application/json") -> str:
        blob = self.bucket.blob(self._object(batch_id, name))
        retry, timeout = self._policy()
        # Retrying is safe although the upload is unconditional: every attempt writes the same bytes, so a
        # repeat after a lost response leaves the object exactly as the first attempt did.
        with self._answered("write", self.url(batch_id, name)):
            if isinstance(data, bytes):
                blob.upload_from_string(data, content_type=content_type, retry=retry, timeout=timeout)
            else:
                # Spooled to a temporary file: an upload needs its size up front, and a retry reads it again.
                with tempfile.TemporaryFile() as spool:
                    for chunk in data:
                        spool.write(chunk)
                    size = spool.tell()
                    spool.seek(0)
                    if size > GCS_CHUNK_BYTES:
                        blob.chunk_size = GCS_CHUNK_BYTES
                    blob.upload_from_file(
                        spool, size=size, content_type=content_type, retry=retry, timeout=timeout
                    )
        return self.url(batch_id, name)

    def read(self, batch_id: str, name: str) -> bytes | None:
        from google.api_core import exceptions as gexc

        retry, timeout = self._policy()
        try:
            with self._answered("read", self.url(batch_id, name)):
                data: bytes = self.bucket.blob(self._object(batch_id, name)).download_as_bytes(
                    retry=retry, timeout=timeout
                )
        except gexc.NotFound:
            return None
        return data

    def read_versioned(self, batch_id: str, name: str) -> tuple[bytes, str] | None:
        from google.api_core import exceptions as gexc

        for _ in range(5):
            retry, timeout = self._policy()
            try:
                with self._answered("read", self.url(batch_id, name)):
                    blob = self.bucket.get_blob(self._object(batch_id, name), retry=retry, timeout=timeout)
                    if blob is None:
                        return None
                    data: bytes = blob.download_as_bytes(
                        if_generation_match=blob.generation, retry=retry, timeout=timeout
                    )
            except (gexc.NotFound, gexc.PreconditionFailed):
                continue  # replaced between the two calls: read the new generation
            return data, str(blob.generation)
        raise StoreError(f"{self.url(batch_id, name)} keeps changing while it is read")

    def write_if(
        self, batch_id: str, name: str, data: bytes, generation: str | None, *, deadline: float | None = None
    ) -> str:
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self._object(batch_id, name))
        retry, timeout = self._policy(deadline)
        # The precondition makes the retry safe (the client's default retries a write only when one is set):
        # a retry can never overwrite another writer. A 412 can also mean that an attempt whose answer was
        # lost landed, so a 412 whose object holds exactly these bytes is this write.
        try:
            with self._answered("write", self.url(batch_id, name)):
                blob.upload_from_string(
                    data,
                    content_type="application/json",
                    if_generation_match=int(generation or 0),
                    retry=retry,
                    timeout=timeout,
                )
        except gexc.PreconditionFailed:
            current = self.read_versioned(batch_id, name)
            if current is not None and current[0] == data:
                return current[1]
            raise StoreConflict(f"{self.url(batch_id, name)} was written by another controller") from None
        return str(blob.generation)

    def list_sizes(self, batch_id: str, folder: str) -> Iterator[tuple[str, int]]:
        start = len(self._object(batch_id, "")) + 1
        retry, timeout = self._policy()
        with self._answered("list", self.url(batch_id, folder)):
            blobs = self.client.list_blobs(
                self.bucket_name, prefix=self._object(batch_id, folder) + "/", retry=retry, timeout=timeout
            )
            for blob in blobs:
                yield blob.name[start:], int(blob.size or 0)

    def write_many(self, batch_id: str, files: list[tuple[str, bytes]]) -> None:
        # Manifests of a 10,000-item launch are 100 small objects: write them side by side.
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda file: self.write(batch_id, file[0], file[1]), files))


def open_store(destination: str, storage_client: Any | None = None) -> Store:
    """A store for ``gs://bucket/prefix`` or a local folder path."""
    if destination.startswith("gs://"):
        bucket, _, prefix = destination.removeprefix("gs://").partition("/")
        if not bucket:
            raise StoreError(f"{destination!r} names no bucket; use gs://BUCKET/PREFIX")
        if storage_client is None:
            raise StoreError("a gs:// destination needs a storage client")
        return GcsStore(storage_client, bucket, prefix)
    if "://" in destination:
        raise StoreError(f"unsupported report destination {destination!r}: use gs://BUCKET/PREFIX or a folder")
    if not destination.strip():  # "" would be the working folder, which nobody means
        raise StoreError("the report destination is empty: give a folder or gs://BUCKET/PREFIX")
    return LocalStore(destination)


def open_bucket_block(name: str) -> GcsStore:
    """A store at a saved prefect-gcp ``GcsBucket`` block: its bucket and ``bucket_folder``.

    The storage client comes from the block's own ``GcpCredentials``, exactly the client prefect-gcp uses
    when the same block persists flow results, so one block grants both. ``google-cloud-storage`` honours
    ``STORAGE_EMULATOR_HOST`` itself, which is how the block reaches fake-gcs-server in tests.
    """
    from prefect.exceptions import ObjectNotFound
    from prefect_gcp.cloud_storage import GcsBucket  # prefect-gcp imports are slow; only pay when asked

    try:
        block = GcsBucket.load(name)
    except ValueError as exc:
        # Prefect turns the API's 404 into a ValueError; other ValueErrors (a block that does not validate)
        # are not a missing name and keep their own message.
        if not isinstance(exc.__cause__, ObjectNotFound):
            raise
        raise StoreError(f"no GcsBucket block named {name!r} on the Prefect server") from None
    client = block.gcp_credentials.get_cloud_storage_client()
    return GcsStore(client, block.bucket, block.bucket_folder)


def read_url(url: str, storage_client: Any | None = None, *, limit: int | None = None) -> bytes:
    """Read one object by URL: ``gs://bucket/path`` or a local path (for ``fanout report show``). With
    ``limit``, an object larger than that many bytes is refused without reading more than one byte past it."""
    if url.startswith("gs://"):
        from google.api_core import exceptions as gexc

        bucket, _, name = url.removeprefix("gs://").partition("/")
        if storage_client is None:
            raise StoreError("reading gs:// needs a storage client")
        try:
            # ``end`` is the last byte's offset: a ranged read of limit + 1 bytes tells a larger object apart.
            data: bytes = storage_client.bucket(bucket).blob(name).download_as_bytes(end=limit)
        except gexc.NotFound:
            raise StoreError(f"{url} does not exist") from None
        if limit is not None and len(data) > limit:
            raise StoreError(f"{url} is larger than {limit:,} bytes, the most it may be")
        return data
    path = Path(url).expanduser()
    if path.is_dir():
        path = path / "report.json"
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
