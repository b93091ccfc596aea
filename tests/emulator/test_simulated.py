"""Simulated tasks (controller scale benchmarks only), at the wire: the official clients see the same
executions, tasks and log entries as for real processes, and no process starts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import logging as gcl
from google.cloud import run_v2

from cloudrun_emulator import Emulator
from cloudrun_emulator.__main__ import build_parser
from cloudrun_emulator.simulated import parse_args
from tests.emulator.conftest import FAST_POLL, Clients

# The container's command would fail at once if it ran: a simulated attempt never runs it.
NEVER_RUN = "import sys; sys.exit(99)"


@pytest.fixture
def sim() -> Iterator[Emulator]:
    with Emulator(kill_grace_seconds=0.2, simulate=True) as emulator:
        yield emulator


@pytest.fixture
def sim_clients(sim: Emulator) -> Clients:
    return Clients(sim)


def _run(clients: Clients, job_id: str, args: list[str], **template: object) -> str:
    clients.create_job(job_id, NEVER_RUN, **template)  # type: ignore[arg-type]
    override = run_v2.RunJobRequest.Overrides.ContainerOverride(args=args)
    operation = clients.run(job_id, container_overrides=[override])
    return str(operation.metadata.name)


def _entries(emu: Emulator, execution: str) -> list[gcl.StructEntry | gcl.TextEntry]:
    options = {"api_endpoint": emu.url}
    anonymous = AnonymousCredentials()
    client = gcl.Client(project=emu.project, credentials=anonymous, _use_grpc=False, client_options=options)
    flt = f'labels."run.googleapis.com/execution_name"="{execution.rsplit("/", 1)[-1]}"'
    return list(client.list_entries(filter_=flt, order_by=gcl.ASCENDING))


def test_parallelism_and_logs_without_processes(sim: Emulator, sim_clients: Clients) -> None:
    name = _run(sim_clients, "par", ["sim-seconds=0.3"], task_count=6, parallelism=2)
    execution = sim_clients.finished(name)
    assert execution.succeeded_count == 6
    stats = sim.task_stats()
    assert stats["peak_running_tasks"] == 2
    assert stats["attempts_started"] == 6
    assert stats["running_processes"] == 0
    durations = [(t.completion_time - t.start_time).total_seconds() for t in sim_clients.tasks_of(name)]
    assert min(durations) >= 0.29
    lines = [e.payload for e in _entries(sim, name)]
    assert lines == ["simulated task: runs 0.3 s, exits 0"] * 6


def test_exit_code_and_retries(sim: Emulator, sim_clients: Clients) -> None:
    name = _run(sim_clients, "fails", ["--item", "x", "sim-exit=3"], max_retries=2)
    execution = sim_clients.finished(name)
    assert execution.failed_count == 1
    (task,) = sim_clients.tasks_of(name)
    assert task.retried == 2
    assert task.last_attempt_result.exit_code == 3
    system = [e.payload for e in _entries(sim, name) if e.log_name.endswith("varlog%2Fsystem")]
    assert system == ["Container called exit(3)."] * 3


def test_timeout_ends_a_long_task(sim: Emulator, sim_clients: Clients) -> None:
    name = _run(sim_clients, "slow", ["sim-seconds=3600"], timeout="1s")
    execution = sim_clients.finished(name, timeout=10)
    assert execution.failed_count == 1
    (task,) = sim_clients.tasks_of(name)
    assert task.last_attempt_result.status.code == 4  # DEADLINE_EXCEEDED, no exit code, as Cloud Run says


def test_cancel_stops_simulated_tasks(sim: Emulator, sim_clients: Clients) -> None:
    name = _run(sim_clients, "cancel", ["sim-seconds=3600"], task_count=3)
    sim_clients.wait_for(name, lambda e: e.running_count == 3)
    sim_clients.executions.cancel_execution(name=name).result(timeout=10, polling=FAST_POLL)
    execution = sim_clients.finished(name, timeout=10)
    assert execution.cancelled_count == 3
    assert sim.task_stats()["running_tasks"] == 0


def test_unreadable_argument_fails_the_task_saying_which(sim_clients: Clients) -> None:
    name = _run(sim_clients, "bad", ["sim-exit=300"])
    execution = sim_clients.finished(name)
    assert execution.failed_count == 1
    (task,) = sim_clients.tasks_of(name)
    assert "'sim-exit=300'" in task.last_attempt_result.status.message


def test_rule_defaults_and_cli_flag() -> None:
    assert parse_args(["plain", "args"]) == parse_args([])
    assert parse_args(["sim-seconds=-1"]) == (
        "simulated task argument 'sim-seconds=-1' is not sim-seconds=SECONDS (>= 0) or sim-exit=0..255"
    )
    assert build_parser().parse_args(["--simulate-tasks"]).simulate_tasks is True
    assert build_parser().parse_args([]).simulate_tasks is False
