"""The quota limiter, driven by a fake clock: no window of the quota's length ever holds more calls."""

from __future__ import annotations

import random
import threading

import pytest

from controller.quota import Budget, RateLimiter, Rates, Unlimited


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("max_calls", "per"), [(1, 1.0), (60, 60.0), (180, 60.0), (7, 2.5)])
def test_no_window_exceeds_the_rate(max_calls: int, per: float) -> None:
    fake = FakeTime()
    limiter = RateLimiter(max_calls, per, clock=fake.clock, sleep=fake.sleep)
    rng = random.Random(max_calls)
    granted = []
    for _ in range(max_calls * 5):
        fake.now += rng.choice([0.0, 0.0, 0.001, per / max_calls, per / 3])
        limiter.acquire()
        granted.append(fake.now)
    # Every window [t, t + per) starting at a grant holds at most max_calls grants (to the microsecond).
    for i, start in enumerate(granted):
        in_window = sum(1 for t in granted[i:] if t < start + per - 1e-6)
        assert in_window <= max_calls
    # And it throttles no more than needed: each wait ends exactly when the oldest grant leaves the window.
    for i in range(max_calls, len(granted)):
        assert granted[i] >= granted[i - max_calls] + per - 1e-6


def test_burst_then_wait_exactly_until_the_oldest_call_leaves_the_window() -> None:
    fake = FakeTime()
    limiter = RateLimiter(3, 60.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        limiter.acquire()
    assert fake.sleeps == []
    fake.now = 10.0
    limiter.acquire()
    assert fake.sleeps == [50.0]
    assert limiter.waited == 50.0


def test_threads_share_one_budget() -> None:
    fake = FakeTime()
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            fake.now += seconds

    limiter = RateLimiter(10, 1.0, clock=fake.clock, sleep=sleep)
    grants: list[float] = []

    def worker() -> None:
        for _ in range(10):
            limiter.acquire()
            with lock:
                grants.append(fake.now)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(grants) == 50
    grants.sort()
    for i, start in enumerate(grants):
        assert sum(1 for t in grants[i:] if t < start + 1.0 - 1e-6) <= 10


def test_budget_from_rates() -> None:
    budget = Budget.from_rates(Rates(run=5, write=None, read=100, logs=60))
    assert isinstance(budget.write, Unlimited)
    assert isinstance(budget.run, RateLimiter) and budget.run.max_calls == 5
    assert all(isinstance(limiter, Unlimited) for limiter in vars(Budget.from_rates(Rates.unlimited())).values())
    with pytest.raises(ValueError):
        RateLimiter(0)
