"""Who runs a batch: ``<report-to>/<batch-id>/batch.json`` names the batch and its one owner at a time.

The record is created with a create-only write; its owner holds a lease that it renews with writes matched
to the generation it last wrote. A second controller finds the lease live and is refused (``BatchOwned``,
saying who holds it and until when); once the lease has run out (its controller died) or was released (its
controller ended), the next controller takes the batch over with a generation-matched write, so of two
controllers racing for it exactly one wins.

The record also carries a nonce made when the batch was created: launch keys include it, so executions of
another batch that happens to have the same id (another spec, another ``--report-to``) are never adopted.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.store import Data, Store, StoreConflict, StoreError

BATCH_STATE = "batch.json"
BATCH_SCHEMA = "fanout.batch/v1"
LEASE_SECONDS = 60.0
# After a renewal that could not reach the store, the next try comes this much sooner than a routine one
# (a third of the lease): a store back within the lease's time finds the lease still this controller's.
RETRY_FRACTION = 12
# Each lost race means another controller wrote the record, which then holds a live lease: the next look
# refuses. More than a few in a row only happen when many controllers start at once.
ACQUIRE_ATTEMPTS = 5


class BatchConflict(Exception):
    """The batch id cannot be used by this run: its record belongs to a different spec, or cannot be read."""


MIN_LEASE_SECONDS = 3.0


def lease_seconds() -> float:
    """How long a controller's lease lasts: ``FANOUT_LEASE_SECONDS``, default ``LEASE_SECONDS``. A shorter
    lease lets a resume take a dead controller's batch over sooner, and stops a paused one sooner; every
    controller renews it every third of its time."""
    text = os.environ.get("FANOUT_LEASE_SECONDS") or str(LEASE_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        raise BatchConflict(f"FANOUT_LEASE_SECONDS: {text!r} is not a number of seconds") from None
    if not MIN_LEASE_SECONDS <= seconds < 86400:
        raise BatchConflict(f"FANOUT_LEASE_SECONDS: {text!r} must be from {MIN_LEASE_SECONDS:.0f} s to a day")
    return seconds


class BatchOwned(BatchConflict):
    """Another live controller holds the batch's lease."""


class LeaseLost(Exception):
    """This controller no longer holds its batch's lease, so it may neither launch nor write the batch's
    files: another controller took the batch over, or the lease ran out while batch.json could not be
    written. ``taken`` tells the two apart: only a takeover is known to have a new owner."""

    def __init__(self, message: str, *, taken: bool) -> None:
        super().__init__(message)
        self.taken = taken

    def __reduce__(self) -> tuple[Any, ...]:  # Prefect may pickle a flow's exception
        return (_lease_lost, (str(self), self.taken))


def _lease_lost(message: str, taken: bool) -> LeaseLost:
    return LeaseLost(message, taken=taken)


def _machine() -> str | None:
    """This kernel's boot and PID namespace: two owners with the same value see the same processes."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


@dataclass(frozen=True)
class Owner:
    """A controller process: where it runs, and a token no other controller has."""

    host: str
    pid: int
    flow_run: str | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    machine: str | None = None

    @classmethod
    def this_process(cls, flow_run: str | None = None) -> Owner:
        return cls(host=socket.gethostname(), pid=os.getpid(), flow_run=flow_run, machine=_machine())

    def describe(self) -> str:
        run = f", flow run {self.flow_run}" if self.flow_run else ""
        return f"host {self.host}, pid {self.pid}{run}"

    def known_dead(self) -> bool:
        """True only when this owner's process surely no longer exists: it ran in this machine's process
        namespace and its pid is gone. Anything else (another machine, no permission to ask) counts as alive."""
        if self.machine is None or self.machine != _machine():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "flow_run": self.flow_run,
            "token": self.token,
            "machine": self.machine,
        }

    @classmethod
    def from_json(cls, data: Any) -> Owner | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                flow_run=data.get("flow_run"),
                token=str(data["token"]),
                machine=data.get("machine"),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class Lease:
    """The batch held by this controller: renew it well before it runs out, release it at the end."""

    store: Store
    batch_id: str
    record: dict[str, Any]
    generation: str
    owner: Owner
    now: Callable[[], datetime]
    seconds: float = LEASE_SECONDS
    lost: str | None = None  # why the batch is no longer ours
    taken: bool = False  # lost to another controller's takeover (not only run out)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    # One write of batch.json at a time: two renewals from the same generation would make the second one
    # conflict with the first and read as a takeover.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def until(self) -> datetime:
        return datetime.fromisoformat(self.record["lease_until"])

    def valid(self) -> bool:
        """Whether this controller may still act for the batch (e.g. send RunJob): the lease is ours and
        has a third of its time left, by this machine's clock."""
        margin = timedelta(seconds=self.seconds / 3)
        return self.lost is None and self.now() + margin < self.until

    def problem(self) -> str:
        """Why this controller may not act for the batch now."""
        return self.lost or f"its lease ran out at {self.until.isoformat(timespec='seconds')}"

    def check(self) -> None:
        """Return only while this controller may act for the batch: called right before each RunJob and each
        write of the batch's files. A lease that ran short (this process was paused, or the store could not
        be reached) is renewed first; that write is generation-matched, so it succeeds only if no other
        controller took the batch meanwhile. Raises LeaseLost otherwise."""
        if self.valid():
            return
        self.renew()
        if not self.valid():
            raise LeaseLost(
                f"this controller no longer holds batch {self.batch_id!r}: {self.problem()}", taken=self.taken
            )

    def renew(self) -> bool:
        """Extend the lease by ``seconds`` from now; False when the store could not be reached (tried again
        until the lease has run out, then lost) or once it is lost."""
        with self._lock:
            if self.lost is not None:
                return False
            record = {**self.record, "lease_until": (self.now() + timedelta(seconds=self.seconds)).isoformat()}
            # The write gives up before the lease would run out: a renewal that lands later is no use.
            left = max(1.0, (self.until - self.now()).total_seconds())
            try:
                self.generation = _write(self.store, self.batch_id, record, self.generation, deadline=left)
            except StoreConflict:
                self.lost = "another controller took the batch over (its lease had run out)"
                self.taken = True
                return False
            except Exception as exc:  # any failure of the store: try again while the lease lasts
                if self.now() >= self.until:
                    self.lost = f"the lease ran out while batch.json could not be written: {_reason(exc)}"
                return False
            self.record = record
            return True

    def release(self) -> None:
        """End the lease now, so that the next run need not wait for it to run out."""
        self.stop()
        with self._lock:
            if self.lost is not None:
                return
            record = {**self.record, "lease_until": self.now().isoformat()}
            try:
                self.generation = _write(self.store, self.batch_id, record, self.generation, deadline=self.seconds / 3)
            except Exception:  # taken over or unreachable: the lease runs out by itself
                return
            self.record = record

    def start(self) -> None:
        """Renew in a background thread every third of the lease until ``release``; after a renewal that
        could not reach the store, sooner, until the lease is lost."""

        def loop() -> None:
            wait = self.seconds / 3
            while not self._stop.wait(wait) and self.lost is None:
                wait = self.seconds / 3 if self.renew() else self.seconds / RETRY_FRACTION

        self._thread = threading.Thread(target=loop, name=f"lease-{self.batch_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


class FencedStore:
    """The batch's store as its owner writes it: each write first checks the lease (``Lease.check``), so a
    controller that lost the batch raises LeaseLost instead of writing over the new owner's files. Reads,
    and the lease's own writes of batch.json, go to the store as they are.

    What remains: a write that passed its check and is then held up past the rest of the lease (a third of
    it, at the least) may land after another controller took over."""

    def __init__(self, store: Store, lease: Lease) -> None:
        self.inner = store
        self.lease = lease

    def url(self, batch_id: str, name: str = "") -> str:
        return self.inner.url(batch_id, name)

    def read(self, batch_id: str, name: str) -> bytes | None:
        return self.inner.read(batch_id, name)

    def read_versioned(self, batch_id: str, name: str) -> tuple[bytes, str] | None:
        return self.inner.read_versioned(batch_id, name)

    def list_sizes(self, batch_id: str, folder: str) -> Iterator[tuple[str, int]]:
        return self.inner.list_sizes(batch_id, folder)

    def write(self, batch_id: str, name: str, data: Data, content_type: str = "application/json") -> str:
        self.lease.check()
        return self.inner.write(batch_id, name, data, content_type)

    def write_many(self, batch_id: str, files: list[tuple[str, bytes]]) -> None:
        self.lease.check()
        self.inner.write_many(batch_id, files)

    def write_if(
        self, batch_id: str, name: str, data: bytes, generation: str | None, *, deadline: float | None = None
    ) -> str:
        self.lease.check()
        return self.inner.write_if(batch_id, name, data, generation, deadline=deadline)


def _write(
    store: Store, batch_id: str, record: dict[str, Any], generation: str | None, *, deadline: float | None = None
) -> str:
    return store.write_if(batch_id, BATCH_STATE, json.dumps(record, indent=1).encode(), generation, deadline=deadline)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


def _parse(store: Store, batch_id: str, data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
        datetime.fromisoformat(record["started_at"])
    except (ValueError, TypeError, KeyError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("spec_digest"), str):
        raise BatchConflict(
            f"{store.url(batch_id, BATCH_STATE)} is not a batch record; remove it or choose another --batch-id"
        )
    return record


def acquire(
    store: Store,
    batch_id: str,
    *,
    spec_digest: str,
    fields: dict[str, Any],
    owner: Owner,
    now: Callable[[], datetime],
    seconds: float = LEASE_SECONDS,
) -> tuple[Lease, bool]:
    """Create the batch, or take it over; returns the lease and whether the batch existed (a resume).

    Raises BatchConflict for a record of another spec (without writing anything) and BatchOwned while
    another controller's lease is live.
    """
    for _ in range(ACQUIRE_ATTEMPTS):
        lease_until = (now() + timedelta(seconds=seconds)).isoformat()
        found = store.read_versioned(batch_id, BATCH_STATE)
        if found is None:
            record = {
                "schema": BATCH_SCHEMA,
                "batch_id": batch_id,
                "spec_digest": spec_digest,
                "nonce": secrets.token_hex(6),
                **fields,
                "owner": owner.as_json(),
                "lease_until": lease_until,
            }
            resumed = False
            generation = None
        else:
            data, generation = found
            current = _parse(store, batch_id, data)
            if current["spec_digest"] != spec_digest:
                raise BatchConflict(
                    f"batch id {batch_id!r} was already used for a different spec (at {store.url(batch_id)}); "
                    "choose another --batch-id, or run the same spec to resume it"
                )
            refuse_if_held(current, batch_id, now())
            record = {**current, "owner": owner.as_json(), "lease_until": lease_until}
            resumed = True
        try:
            generation = _write(store, batch_id, record, generation)
        except StoreConflict:
            continue  # another controller created or took it meanwhile: look again (it now holds the lease)
        return Lease(store, batch_id, record, generation, owner, now, seconds), resumed
    raise BatchOwned(f"batch {batch_id!r} changed hands {ACQUIRE_ATTEMPTS} times while this run tried to open it")


def refuse_if_held(record: dict[str, Any], batch_id: str, now: datetime) -> None:
    """Raise BatchOwned when ``record`` (a batch.json) names an owner whose lease is live at ``now``."""
    holder = Owner.from_json(record.get("owner"))
    try:
        until = datetime.fromisoformat(record.get("lease_until") or "")
    except (TypeError, ValueError):
        return  # a record from before leases: nobody holds it
    if holder is None or until <= now or holder.known_dead():
        return
    raise BatchOwned(
        f"batch {batch_id!r} is being run by another controller ({holder.describe()}); its lease runs until "
        f"{until.isoformat(timespec='seconds')}. Wait for that run to end, or for the lease to run out if "
        "that controller died"
    )


__all__ = [
    "BATCH_STATE",
    "BatchConflict",
    "BatchOwned",
    "FencedStore",
    "Lease",
    "LeaseLost",
    "Owner",
    "acquire",
    "lease_seconds",
    "refuse_if_held",
]
