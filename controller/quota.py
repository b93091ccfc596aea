"""Quota budgets: the controller never sends more API calls than a configured rate allows.

Cloud Run and Cloud Logging enforce per-minute quotas per project and region; going over them costs
429s and backoff. A sliding-window limiter keeps every window of ``per_seconds`` at or under
``max_calls``, which is exactly how the quotas are stated (unlike a token bucket, which can let up to twice
the rate through one window). Time is injected so tests are exact and instant.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_TOLERANCE = 1e-6  # seconds


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


Limiter = RateLimiter | Unlimited


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

    @classmethod
    def unlimited(cls) -> Rates:
        return cls(run=None, write=None, read=None, logs=None)


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
