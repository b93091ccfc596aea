"""Task timeouts hold when the emulator's event loop is starved: they count from the attempt's start and are
enforced by the task supervisor, a process of its own (cloudrun_emulator.supervisor).

The loop is starved on purpose: the attempt's ``on_start`` callback blocks it (``time.sleep``) right after the
process started, for longer than the command runs. A timer that starts on that loop only after the block, or
that fires late, sees a command that already ended by itself and calls it a success.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import pytest

from cloudrun_emulator import supervisor
from cloudrun_emulator.processes import Outcome, ProcessGroups

ENV = {"PATH": os.environ["PATH"]}
TIMEOUT = 1.0
STARVED = 4.0  # seconds the loop is blocked from the attempt's start: past the timeout and the command's end


def _attempt(argv: list[str]) -> tuple[Outcome, list[str]]:
    lines: list[str] = []

    async def main() -> Outcome:
        groups = ProcessGroups(kill_grace_seconds=1.0)
        try:
            return await groups.run(
                argv,
                ENV,
                None,
                TIMEOUT,
                lambda _stream, line: lines.append(line),
                on_start=lambda _pid: time.sleep(STARVED),
            )
        finally:
            groups.kill_all()

    return asyncio.run(main()), lines


def test_a_task_past_its_timeout_is_stopped_there_while_the_loop_is_starved() -> None:
    outcome, lines = _attempt(["sh", "-c", "sleep 3; echo finished"])
    assert outcome.timed_out, outcome
    assert outcome.exit_code != 0, outcome
    assert "finished" not in lines  # stopped at its deadline, while the loop was still blocked


def test_a_task_that_ended_in_time_is_not_timed_out_when_the_loop_sees_it_late() -> None:
    outcome, lines = _attempt(["sh", "-c", "echo done"])
    assert outcome == Outcome(exit_code=0), outcome
    assert lines == ["done"]


def test_a_group_number_taken_by_another_process_is_left_alone() -> None:
    """The supervisor signals a group only while its number is the task's: a leader reaped before the emulator
    said so, whose pid another process took, is told apart by its start time."""
    me = os.getpid()
    mine = supervisor.Watched(started=None, deadline=0.0, grace=0.0)
    assert not supervisor._still_ours(me, mine)  # the number was free at watch time, now this process has it
    stat = supervisor._proc_stat(me)
    assert stat is not None
    assert supervisor._still_ours(me, supervisor.Watched(started=stat[1], deadline=0.0, grace=0.0))


def test_a_timed_out_task_takes_the_process_that_left_its_group_with_it(tmp_path: Path) -> None:
    """Cloud Run stops the whole container at a timeout: a descendant in a session of its own goes too."""
    pidfile = tmp_path / "stray.pid"
    outcome, _lines = _attempt(["sh", "-c", f'setsid sh -c \'echo $$ > {pidfile}; exec sleep 300\' & sleep 30'])
    assert outcome.timed_out, outcome
    stray = int(pidfile.read_text())
    deadline = time.monotonic() + 20
    while (stat := supervisor._proc_stat(stray)) is not None and stat[0] not in ("Z", "X"):
        assert time.monotonic() < deadline, f"process {stray}, in a session of its own, outlived the timeout"
        time.sleep(0.05)


def test_what_a_task_left_running_ends_with_it_as_its_container_would(tmp_path: Path) -> None:
    """On Cloud Run a task's container stops when its command exits: background processes go with it, in
    its group or in a session of their own."""
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! >> {pids}; setsid sh -c 'echo $$ >> {pids}; exec sleep 300' & sleep 0.5; echo done"
    outcome, lines = _attempt(["sh", "-c", script])
    assert outcome == Outcome(exit_code=0), outcome
    assert lines == ["done"]
    left = [int(pid) for pid in pids.read_text().split()]
    assert len(left) == 2
    deadline = time.monotonic() + 20
    while running := [pid for pid in left if (stat := supervisor._proc_stat(pid)) and stat[0] not in ("Z", "X")]:
        assert time.monotonic() < deadline, f"processes {running} outlived the task that started them"
        time.sleep(0.05)


def test_a_process_that_exits_while_its_status_is_read_is_gone_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    # /proc/PID/stat of a process that exits between the open and the read answers ESRCH to the read. Seen on
    # a loaded CI machine: the supervisor died of it, and with it every timeout it was enforcing.
    class Vanishing(io.StringIO):
        def read(self, size: int | None = -1) -> str:
            raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(supervisor, "open", lambda *args, **kwargs: Vanishing(), raising=False)
    assert supervisor._proc_stat(os.getpid()) is None
