"""The documented ``-`` wildcard: ListExecutions of every job (``jobs/-/executions``), ListTasks of every
execution of a job (``executions/-/tasks``) or of every job (``jobs/-/executions/-/tasks``), with paging,
over REST and gRPC."""

from __future__ import annotations

import pytest
from google.cloud import run_v2

from cloudrun_emulator import Emulator
from tests.emulator.conftest import FAST_POLL, Clients


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_wildcards_list_across_jobs_and_executions(emu: Emulator, transport: str) -> None:
    c = Clients(emu, transport)
    c.create_job("wild-a", "pass", task_count=2)
    c.create_job("wild-b", "pass", task_count=3)
    ran = [c.run(job).result(timeout=20, polling=FAST_POLL).name for job in ("wild-a", "wild-b", "wild-a")]
    newest_first = list(reversed(ran))

    def executions(parent: str, size: int) -> list[str]:
        request = run_v2.ListExecutionsRequest(parent=parent, page_size=size)
        return [e.name for e in c.executions.list_executions(request=request)]

    def tasks(parent: str, size: int) -> list[str]:
        return [t.name for t in c.tasks.list_tasks(request=run_v2.ListTasksRequest(parent=parent, page_size=size))]

    assert executions(f"{c.parent}/jobs/-", 2) == newest_first
    assert executions(f"{c.parent}/jobs/-", 100) == newest_first
    assert executions(f"{c.parent}/jobs/wild-a", 1) == [ran[2], ran[0]]

    each = {name: tasks(name, 100) for name in ran}
    assert [len(each[name]) for name in ran] == [2, 3, 2]
    every = [task for name in newest_first for task in each[name]]
    for size in (1, 2, 3, 100):
        assert tasks(f"{c.parent}/jobs/-/executions/-", size) == every
    assert tasks(f"{c.parent}/jobs/wild-a/executions/-", 3) == each[ran[2]] + each[ran[0]]
    assert tasks(f"{c.parent}/jobs/-/executions/{ran[1].rsplit('/', 1)[-1]}", 2) == each[ran[1]]
    assert tasks(f"{c.parent}/jobs/-/executions/-".replace(emu.region, "elsewhere"), 10) == []
