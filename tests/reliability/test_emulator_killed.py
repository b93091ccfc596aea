"""The emulator SIGKILLed while tasks run: no task process, and none of their descendants, is left.

A SIGKILLed emulator cannot clean up; its task supervisor (cloudrun_emulator.supervisor) sees the emulator's pipe
close and kills every task process group, and every process that left a group for a session of its own
(``setsid``). Task 0's command leaves a background grandchild in its group, task 1's one in a new session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from google.cloud import run_v2

from cloudrun_emulator.supervisor import CHECK_SECONDS
from tests.reliability.harness import LAUNCH_KEY, CloudRunView, EmulatorProcess, task_processes, wait_for

pytestmark = pytest.mark.slow

BATCH = "emulator-killed"
TASKS = 3
# Task 0 starts a background sleep (a grandchild of the emulator) beside its own, task 1 one that leaves
# the group for a session of its own: two more than a task each.
SLEEPS = TASKS + 2
COMMAND = (
    'if [ "$CLOUD_RUN_TASK_INDEX" = 0 ]; then sleep 300 & fi; '
    'if [ "$CLOUD_RUN_TASK_INDEX" = 1 ]; then setsid sleep 300 & fi; sleep 300'
)
# The supervisor acts on the pipe's end at once, on a parent that changed at its next check; the rest is the
# kernel delivering SIGKILL on a machine that may be busy.
GONE_WITHIN = 20 * CHECK_SECONDS


def _sleeps(batch_id: str) -> list[int]:
    found = []
    for pid in task_processes(batch_id):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                found.append(pid)
        except OSError:
            continue  # gone meanwhile
    return found


def _children(pid: int) -> list[int]:
    """Pids of a process's live children, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rpartition(")")[2].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def _run_sleepers(view: CloudRunView) -> None:
    container = run_v2.Container(
        image="example.com/sh:1",
        command=["sh", "-c", COMMAND],
        env=[run_v2.EnvVar(name=LAUNCH_KEY, value=f"{BATCH}/0")],
    )
    template = run_v2.TaskTemplate(containers=[container], max_retries=0, timeout="600s")
    job = run_v2.Job(template=run_v2.ExecutionTemplate(template=template, task_count=TASKS, parallelism=TASKS))
    view.jobs.create_job(parent=view.parent, job=job, job_id="sleepers").result(timeout=30)
    view.jobs.run_job(name=f"{view.parent}/jobs/sleepers")


def test_no_task_process_outlives_a_sigkilled_emulator(tmp_path: Path, figures: Any) -> None:
    emu = EmulatorProcess(tmp_path / "emulator").start()
    try:
        assert emu.proc is not None
        _run_sleepers(CloudRunView(emu.url))
        wait_for(lambda: len(_sleeps(BATCH)) == SLEEPS, 60, what="every task's sleep to run")
        tasks = task_processes(BATCH)
        supervisors = [pid for pid in _children(emu.proc.pid) if pid not in tasks]
        emu.proc.kill()
        killed = time.monotonic()
        emu.proc.wait(30)
        wait_for(lambda: not task_processes(BATCH), GONE_WITHIN, 0.02, what="every task process to be gone")
        gone_after = time.monotonic() - killed
        assert len(supervisors) == 1, supervisors
        wait_for(lambda: not Path(f"/proc/{supervisors[0]}").exists(), GONE_WITHIN, what="the supervisor to exit")
    finally:
        emu.stop()
        for pid in task_processes(BATCH):  # what a failed run left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    figures(
        "emulator SIGKILLed",
        f"{len(tasks)} task processes ({SLEEPS} sleeps, two grandchildren, one in its own session) gone "
        f"{gone_after:.2f} s after the SIGKILL; no process left",
    )
