"""Quota budgets: the controller never sends more API calls than a configured rate allows.

Cloud Run and Cloud Logging enforce per-minute quotas per project and region; going over them costs
429s and backoff. A sliding-window limiter keeps every window of ``per_seconds`` at or under
``max_calls``, which is exactly how the quotas are stated (unlike a token bucket, which can let up to twice
the rate through one window). Time is injected so tests are exact and instant.

Those limiters count one process's calls; two batches of one project at once would each spend a full
budget. When a Prefect API server is configured (the reusable local server, or the user's), the budget is
kept there instead: one Prefect global rate limit per project, region and kind of call, created on first use
with the rates below, shared by every batch and visible (and editable) in the UI's Concurrency page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

_TOLERANCE = 1e-6  # seconds
# A Prefect rate limit is a leaky bucket: ``limit`` calls at once, then one more each time
# ``slot_decay_per_second`` frees a slot, so a window of W seconds may hold ``limit + decay * W`` calls. The
# burst is a sixth of the minute's budget and the decay the rest, so no 60-second window exceeds the quota.
_BURST_SHARE = 6


class Limiter(Protocol):
    """What every call site charges: ``acquire`` blocks until one more call is allowed."""

    waited: float  # total seconds callers spent waiting, for reports and benchmarks

    def acquire(self) -> None: ...


class RateLimiter:
    """At most ``max_calls`` acquisitions in any window of ``per_seconds``; ``acquire`` blocks until allowed."""

    def __init__(
        self,
        max_calls: int,
        per_seconds: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_calls < 1 or per_seconds <= 0:
            raise ValueError("a rate needs max_calls >= 1 and per_seconds > 0")
        self.max_calls = max_calls
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds callers spent waiting, for reports and benchmarks

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                # The tolerance absorbs float rounding: after sleeping exactly until a grant expires, the
                # clock may read a hair before its expiry, and re-sleeping that hair never advances time.
                while self._granted and self._granted[0] + self.per_seconds <= now + _TOLERANCE:
                    self._granted.popleft()
                if len(self._granted) < self.max_calls:
                    self._granted.append(now)
                    return
                wait = self._granted[0] + self.per_seconds - now
            self.waited += wait
            self._sleep(wait)


class Unlimited:
    """A limiter that never waits (local emulator runs, benchmarks of raw throughput)."""

    waited = 0.0

    def acquire(self) -> None:
        return None


@dataclass(frozen=True)
class Rates:
    """Calls per minute for each kind of call. ``None`` means unlimited.

    Defaults sit at or under Cloud Run's and Cloud Logging's default per-project, per-region quotas
    (run requests, other writes, reads; Logging's entries.list is 60 per minute per project). Raise them
    to match a project whose quota was increased.
    """

    run: int | None = 180
    write: int | None = 180
    read: int | None = 1000
    logs: int | None = 60
    shared: bool = True  # keep the budget on the Prefect server when one is configured

    @classmethod
    def unlimited(cls) -> Rates:
        return cls(run=None, write=None, read=None, logs=None, shared=False)


@dataclass
class Budget:
    """One limiter per kind of call, shared by every thread of a batch."""

    run: Limiter
    write: Limiter
    read: Limiter
    logs: Limiter

    @classmethod
    def from_rates(
        cls,
        rates: Rates,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Budget:
        def make(per_minute: int | None) -> Limiter:
            return Unlimited() if per_minute is None else RateLimiter(per_minute, 60.0, clock=clock, sleep=sleep)

        return cls(run=make(rates.run), write=make(rates.write), read=make(rates.read), logs=make(rates.logs))

    @classmethod
    def for_project(cls, rates: Rates, *, project: str, region: str) -> Budget:
        """The budget of one batch: shared through Prefect's global rate limits when ``rates.shared`` and a
        Prefect API server is configured, else this process's own limiters (said once in the log)."""
        local = cls.from_rates(rates)
        if not rates.shared:
            return local
        reason = _prefect_unusable()
        if reason is not None:
            log.info("API-call budget kept in this process only (%s)", reason)
            return local

        def make(kind: str, per_minute: int | None, fallback: Limiter) -> Limiter:
            if per_minute is None:
                return fallback
            # Cloud Logging's quota is per project; Cloud Run's are per project and region.
            where = project if kind == "logs" else f"{project}:{region}"
            return PrefectRateLimit(f"fanout:{where}:{kind}", per_minute, fallback=fallback)

        return cls(
            run=make("run", rates.run, local.run),
            write=make("write", rates.write, local.write),
            read=make("read", rates.read, local.read),
            logs=make("logs", rates.logs, local.logs),
        )


def _prefect_unusable() -> str | None:
    """Why Prefect's global limits cannot hold the budget, or None when they can."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return "no Prefect API server is configured; Prefect would run an ephemeral one for this process"
    return None


def limit_shape(per_minute: int) -> tuple[int, float]:
    """The Prefect limit (burst slots, slot decay per second) that never lets 60 s hold over ``per_minute``."""
    burst = max(1, per_minute // _BURST_SHARE)
    return burst, (per_minute - burst) / 60.0


class PrefectRateLimit:
    """One kind of call's budget held by the Prefect server, so every batch of a project draws on it.

    The limit is created on first use when it does not exist; one that exists is used as it is (an operator
    may have raised it in the UI to match a raised quota). When the server cannot hold the budget (it went
    away, or a limit of that name is a concurrency limit without slot decay) this limiter says so once and
    falls back to ``fallback``, this process's own limiter, for the rest of the batch.
    """

    def __init__(self, name: str, per_minute: int, *, fallback: Limiter) -> None:
        self.name = name
        self.per_minute = per_minute
        self.fallback = fallback
        self.waited = 0.0
        self._lock = threading.Lock()
        self._ready = False
        self._failed = False

    def acquire(self) -> None:
        if not self._failed:
            started = time.monotonic()
            try:
                self._ensure_limit()
                self._take_slot()
            except _server_errors() as exc:
                self._give_up(exc)
            else:
                self.waited += time.monotonic() - started
                return
        self.fallback.acquire()

    def _ensure_limit(self) -> None:
        with self._lock:
            if self._ready:
                return
            ensure_rate_limit(self.name, self.per_minute)
            self._ready = True

    def _take_slot(self) -> None:
        from prefect.concurrency.sync import rate_limit

        rate_limit(self.name, strict=True)

    def _give_up(self, exc: Exception) -> None:
        with self._lock:
            if self._failed:
                return
            self._failed = True
        log.warning(
            "the shared API-call budget %s on the Prefect server cannot be used (%s: %s); "
            "this batch keeps its own budget from now on",
            self.name,
            type(exc).__name__,
            exc,
        )


def _server_errors() -> tuple[type[Exception], ...]:
    """What the Prefect server's budget may fail with: the server unreachable or refusing (httpx), a slot
    not acquired (Prefect wraps every acquisition failure in one error), a limit that is not a rate limit."""
    import httpx
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError  # raised by sync.rate_limit
    from prefect.exceptions import PrefectException

    return (httpx.HTTPError, ConcurrencySlotAcquisitionError, PrefectException, OSError, ValueError)


def calls_per_minute(limit: int, slot_decay_per_second: float) -> int:
    """The most calls a Prefect rate limit lets through in 60 s: its burst and a minute of its decay (the
    inverse of ``limit_shape``)."""
    return round(limit + slot_decay_per_second * 60.0)


def shared_rate_limits() -> list[tuple[str, int, int, float]]:
    """The fanout budgets on the Prefect server: (name, calls per minute, limit, slot decay per second)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limits = client.read_global_concurrency_limits(limit=200, offset=0)
    return sorted(
        (limit.name, calls_per_minute(limit.limit, limit.slot_decay_per_second or 0.0), limit.limit,
         limit.slot_decay_per_second or 0.0)
        for limit in limits
        if limit.name.startswith("fanout:") and limit.slot_decay_per_second
    )  # fmt: skip


def set_rate_limit(name: str, per_minute: int) -> tuple[int, float]:
    """Set (or create) the shared budget ``name`` to ``per_minute`` calls; the limit and decay it got."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    burst, decay = limit_shape(per_minute)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=burst, slot_decay_per_second=decay)
            )
        else:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=burst, slot_decay_per_second=decay)
            )
    return burst, decay


def ensure_rate_limit(name: str, per_minute: int) -> None:
    """Create Prefect's global rate limit ``name`` for ``per_minute`` calls unless it exists already."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    burst, decay = limit_shape(per_minute)
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=burst, slot_decay_per_second=decay)
                )
                log.info("created the shared API-call budget %s: %d calls per minute", name, per_minute)
            except ObjectAlreadyExists:
                pass  # another batch of the project created it first: one budget all the same
            return
    if not existing.slot_decay_per_second:
        raise ValueError(f"Prefect's limit {name!r} exists without slot decay, so it is not a rate limit")
