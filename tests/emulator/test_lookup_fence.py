"""After an ambiguous RunJob error the controller looks for the launch's key among the job's executions. It
reads those started since the launch was sent, not every execution of the batch: the look stops at one whose
RunJob was answered before the launch was sent (created before anything the launch did), and the first page
asked for is small. Through google-cloud-run against the emulator, with RunJob's faults injected there."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from cloudrun_emulator import Emulator, Faults, MethodFaults
from controller.clients import Clients as ControllerClients
from controller.clients import Endpoints
from controller.cloudrun import LOOKUP_FIRST_PAGE, PAGE_SIZE, CloudRun
from controller.plan import ENV_LAUNCH_KEY, Launch
from controller.quota import Budget, Rates
from tests.emulator.conftest import Clients

EARLIER = 30  # executions answered before the launch under test: more than a first page


def _launch(key: str) -> Launch:
    return Launch(
        index=0,
        key=key,
        job="fenced",
        packed=False,
        items=(),
        args=None,
        clear_args=False,
        env=((ENV_LAUNCH_KEY, key),),
        secret_env=(),
        sensitive_env=(),
        task_count=1,
        timeout_seconds=None,
        manifest=None,
    )


def _listing(cloud: CloudRun) -> list[tuple[int, int]]:
    """Record (page size asked, executions answered) of every ListExecutions call the controller makes."""
    calls: list[tuple[int, int]] = []
    real: Callable[..., Any] = cloud.clients.executions.list_executions

    def list_executions(*, request: Any, **kwargs: Any) -> Any:
        page = real(request=request, **kwargs)
        calls.append((request.page_size, len(page.executions)))
        return page

    cloud.clients.executions.list_executions = list_executions  # type: ignore[method-assign]
    return calls


def test_a_look_up_after_a_lost_answer_reads_what_started_since_the_launch_was_sent(
    emu: Emulator, clients: Clients
) -> None:
    clients.create_job("fenced", "pass")
    endpoints = Endpoints(cloud_run=emu.url, logging=emu.url)
    cloud = CloudRun(
        ControllerClients(project=emu.project, endpoints=endpoints),
        emu.project,
        emu.region,
        Budget.from_rates(Rates.unlimited()),
        attempts=2,
        sleep=lambda _seconds: None,
    )
    since = datetime.now(UTC) - timedelta(minutes=1)
    earlier = [cloud.run(_launch(f"k{i}"), since=since).name for i in range(EARLIER)]
    calls = _listing(cloud)

    # RunJob acts, then its answer is lost: the look-up finds the execution on the first, small page.
    emu.set_faults(Faults(methods={"Jobs.RunJob": MethodFaults(drop_rate=1.0, drop_mode="503")}))
    try:
        found = cloud.run(_launch("lost"), since=since)
    finally:
        emu.set_faults(Faults())
    assert found.name not in earlier
    assert calls == [(LOOKUP_FIRST_PAGE, LOOKUP_FIRST_PAGE)]

    # RunJob refused before acting, each time: every look stops at the newest execution answered before the
    # launch was sent, on the first page; after the list-lag window the launch is sent again, and again
    # refused. Nothing was started.
    calls.clear()
    emu.set_faults(Faults(methods={"Jobs.RunJob": MethodFaults(error_rates={503: 1.0})}))
    try:
        with pytest.raises(gexc.ServiceUnavailable):
            cloud.run(_launch("refused"), since=since)
    finally:
        emu.set_faults(Faults())
    assert calls and all(call == (LOOKUP_FIRST_PAGE, LOOKUP_FIRST_PAGE) for call in calls), calls
    listed = cloud.find_launched("fenced", {"lost", "refused", "k0"}, since=since)
    assert set(listed) == {"lost", "k0"}  # the whole job, read without a fence: nothing under "refused"

    # Without executions answered before it (a launch that is the job's first), the look reads the job down to
    # the batch's start, as before: a full page.
    calls.clear()
    assert cloud.verify_launch(_launch("absent"), since=since) is None
    assert {size for size, _count in calls} == {PAGE_SIZE}
    assert all(count == EARLIER + 1 for _size, count in calls)
