"""The shared budget: Prefect's global rate limits, on a real Prefect API server, hold one budget for every
batch of a project, and a budget the server cannot hold falls back to the process's own limiter."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest

from controller.quota import Budget, PrefectRateLimit, RateLimiter, Rates, ensure_rate_limit, limit_shape

pytestmark = pytest.mark.usefixtures("prefect_server")


def _project() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"  # each test its own limits: the session's server keeps them


def _read(name: str) -> tuple[int, float]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_global_concurrency_limit_by_name(name)
    return found.limit, found.slot_decay_per_second or 0.0


@pytest.mark.parametrize("per_minute", [1, 6, 60, 180, 1000])
def test_a_limit_shape_never_lets_a_minute_exceed_the_quota(per_minute: int) -> None:
    burst, decay = limit_shape(per_minute)
    assert burst >= 1
    assert burst + decay * 60 <= per_minute + 1e-9


def test_two_batches_of_one_project_share_one_budget() -> None:
    project, per_minute, calls_each = _project(), 30, 5
    budgets = [Budget.for_project(Rates(run=per_minute), project=project, region="r1") for _ in range(2)]
    assert all(isinstance(b.run, PrefectRateLimit) for b in budgets)
    granted: list[float] = []
    lock = threading.Lock()

    def batch(budget: Budget) -> None:
        for _ in range(calls_each):
            budget.run.acquire()
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=batch, args=(b,)) for b in budgets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(granted) == 2 * calls_each
    burst, decay = limit_shape(per_minute)
    assert _read(f"fanout:{project}:r1:run") == (burst, decay)
    # Two process-local budgets would each grant all five at once; the shared one grants its burst, then one
    # call per 1/decay seconds, across both batches together.
    granted.sort()
    span = granted[-1] - granted[0]
    assert span >= (2 * calls_each - burst - 1) / decay
    assert budgets[0].run.waited + budgets[1].run.waited > 0


def test_an_existing_limit_is_used_as_it_is() -> None:
    name = f"fanout:{_project()}:r1:write"
    ensure_rate_limit(name, 600)
    ensure_rate_limit(name, 60)  # a later batch asking for less does not shrink what the operator set
    assert _read(name) == limit_shape(600)


def test_the_logs_budget_is_per_project_and_the_others_per_region() -> None:
    project = _project()
    budget = Budget.for_project(Rates(), project=project, region="europe-west1")
    assert isinstance(budget.logs, PrefectRateLimit) and budget.logs.name == f"fanout:{project}:logs"
    assert isinstance(budget.read, PrefectRateLimit) and budget.read.name == f"fanout:{project}:europe-west1:read"


def test_a_concurrency_limit_of_that_name_falls_back_to_the_local_budget(caplog: pytest.LogCaptureFixture) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    project = _project()
    with get_client(sync_client=True) as client:  # someone made it a plain concurrency limit: no slot decay
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=f"fanout:{project}:r1:run", limit=1))
    budget = Budget.for_project(Rates(run=2), project=project, region="r1")
    assert isinstance(budget.run, PrefectRateLimit)
    with caplog.at_level(logging.WARNING, logger="controller.quota"):
        budget.run.acquire()
        budget.run.acquire()
    assert isinstance(budget.run.fallback, RateLimiter) and len(budget.run.fallback._granted) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "without slot decay" in warnings[0] and "keeps its own budget" in warnings[0]


def test_no_prefect_server_or_local_quota_keeps_the_budget_in_the_process() -> None:
    from prefect.settings import PREFECT_API_URL
    from prefect.settings.context import temporary_settings

    assert isinstance(Budget.for_project(Rates(shared=False), project="p", region="r").run, RateLimiter)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        budget = Budget.for_project(Rates(), project="p", region="r")
    assert all(isinstance(limiter, RateLimiter) for limiter in (budget.run, budget.write, budget.read, budget.logs))
