"""Scheduling: runs an execution's tasks within its parallelism and the emulator's cap, with retries,
timeouts and cancellation, and moves executions and tasks through their states.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cloudrun_emulator.processes import Outcome
from cloudrun_emulator.records import Execution, State, Task
from cloudrun_emulator.registry import Clock
from cloudrun_emulator.render import MSG_CANCELLED, MSG_NONZERO, MSG_TIMEOUT
from cloudrun_emulator.runtime import SetupError, TaskRuntime

log = logging.getLogger("cloudrun_emulator")

DEFAULT_MAX_RUNNING_TASKS = 64


@dataclass
class Counters:
    tasks_started: int = 0
    peak_running: int = 0
    executions_started: int = 0
    running_tasks: int = 0


class Scheduler:
    """Drives executions on the event loop; at most ``max_running_tasks`` tasks run at once overall."""

    def __init__(self, runtime: TaskRuntime, max_running_tasks: int | None, clock: Clock = time.time) -> None:
        self.runtime = runtime
        self.clock = clock
        self.counters = Counters()
        self._slots = asyncio.Semaphore(max_running_tasks or DEFAULT_MAX_RUNNING_TASKS)

    def start(self, ex: Execution) -> None:
        ex.driver = asyncio.get_running_loop().create_task(self._drive(ex))

    def cancel(self, ex: Execution) -> None:
        """Stop the execution's tasks; it finishes (CANCELLED) once they are all gone."""
        if ex.finished or ex.cancelling:
            return
        ex.cancelling = True
        ex.version += 1
        ex.cancel_event.set()
        if ex.driver is None:
            self.finish(ex)
            return
        for task in ex.tasks:
            self.runtime.stop(task)

    async def shutdown(self, executions: Iterable[Execution]) -> None:
        """Kill every task process group and finish every execution."""
        self.runtime.kill_all()
        executions = list(executions)
        drivers = [ex.driver for ex in executions if ex.driver and not ex.driver.done()]
        for ex in executions:
            if not ex.finished:
                ex.cancelling = True
                ex.version += 1
                ex.cancel_event.set()
        if drivers:
            await asyncio.wait(drivers, timeout=5.0)
        for ex in executions:
            self.finish(ex)

    def finish(self, ex: Execution) -> None:
        """Settle the execution's final state; tasks that never ended are cancelled."""
        if ex.finished:
            return
        now = self.clock()
        for task in ex.tasks:
            if task.state in (State.PENDING, State.RUNNING):
                task.state = State.CANCELLED
                task.completion_time = now
                task.version += 1
                ex.cancelled += 1
        ex.running = 0
        if ex.cancelling:
            ex.state = State.CANCELLED
        elif ex.failed:
            ex.state = State.FAILED
        else:
            ex.state = State.SUCCEEDED
        ex.completion_time = now
        ex.version += 1
        ex.done.set()

    async def _acquire(self, sem: asyncio.Semaphore, ex: Execution) -> bool:
        """Take a slot, unless the execution is cancelled while waiting for one."""
        if ex.cancelling:
            return False
        acquire = asyncio.ensure_future(sem.acquire())
        cancelled = asyncio.ensure_future(ex.cancel_event.wait())
        await asyncio.wait({acquire, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        cancelled.cancel()
        if acquire.done() and not acquire.cancelled():
            if ex.cancelling:
                sem.release()
                return False
            return True
        acquire.cancel()
        return False

    async def _drive(self, ex: Execution) -> None:
        ex.state = State.RUNNING
        ex.start_time = self.clock()
        ex.version += 1
        self.counters.executions_started += 1
        own = asyncio.Semaphore(ex.parallelism or ex.task_count)
        running: set[asyncio.Task[None]] = set()

        def release(done: asyncio.Task[None]) -> None:
            running.discard(done)
            own.release()
            self._slots.release()

        try:
            for task in ex.tasks:
                if not await self._acquire(own, ex):
                    break
                if not await self._acquire(self._slots, ex):
                    own.release()
                    break
                runner = asyncio.get_running_loop().create_task(self._run_task(ex, task))
                running.add(runner)
                runner.add_done_callback(release)
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            self.finish(ex)

    async def _run_task(self, ex: Execution, task: Task) -> None:
        counters = self.counters
        task.scheduled_time = self.clock()
        counters.tasks_started += 1
        ex.running += 1
        counters.running_tasks += 1
        counters.peak_running = max(counters.peak_running, counters.running_tasks)
        try:
            await self._attempts(ex, task)
        except Exception:
            # A bug here must not take the scheduler down: the task fails and says why.
            log.exception("task %s crashed in the emulator", task.name)
            if not task.state.final:
                self._task_failed(ex, task, "INTERNAL", "The emulator failed to run this task.", None, reason="")
        finally:
            task.pid = None
            ex.running -= 1
            counters.running_tasks -= 1
            ex.version += 1

    async def _attempts(self, ex: Execution, task: Task) -> None:
        container = ex.template.containers[0]
        while True:
            task.state = State.RUNNING
            task.start_time = self.clock()
            task.version += 1
            ex.version += 1
            outcome = await self.runtime.attempt(ex, task, container)
            if isinstance(outcome, SetupError):
                # The container never started (no secret value, no such command): a retry cannot help.
                task.start_time, task.never_started, task.reason = None, True, outcome.reason
                self._task_failed(ex, task, "FAILED_PRECONDITION", outcome.message, None, reason="")
                return
            if not self._settle(ex, task, outcome):
                return
            if task.retried == 0:
                ex.retried += 1
            task.retried += 1
            task.attempt += 1

    def _settle(self, ex: Execution, task: Task, outcome: Outcome) -> bool:
        """Record how an attempt ended; True when the task is to be tried again."""
        if outcome.exit_code == 0 and not outcome.timed_out and not outcome.killed_by_request:
            self._task_ended(ex, task, State.SUCCEEDED, 0, "OK", "")
            ex.succeeded += 1
            return False
        if ex.cancelling or outcome.killed_by_request:
            self._task_ended(ex, task, State.CANCELLED, None, "CANCELLED", MSG_CANCELLED)
            ex.cancelled += 1
            return False
        if outcome.timed_out:
            # Cloud Run reports no exit code for a task it stopped at its timeout.
            task.exit_code, task.status_code, task.status_message = None, "DEADLINE_EXCEEDED", MSG_TIMEOUT
        else:
            task.exit_code, task.status_code, task.status_message = outcome.exit_code, "UNKNOWN", MSG_NONZERO
        if task.attempt < ex.template.max_retries:
            return True
        reason = "" if outcome.timed_out else "NON_ZERO_EXIT_CODE"
        self._task_failed(ex, task, task.status_code, task.status_message, task.exit_code, reason=reason)
        return False

    def _task_ended(
        self, ex: Execution, task: Task, state: State, exit_code: int | None, code: str, message: str
    ) -> None:
        task.state = state
        task.exit_code = exit_code
        task.status_code, task.status_message = code, message
        task.completion_time = self.clock()
        task.version += 1

    def _task_failed(
        self,
        ex: Execution,
        task: Task,
        code: str,
        message: str,
        exit_code: int | None,
        *,
        reason: str = "NON_ZERO_EXIT_CODE",
    ) -> None:
        self._task_ended(ex, task, State.FAILED, exit_code, code, message)
        ex.failed += 1
        if not ex.first_failure:
            task_id = task.name.rsplit("/", 1)[-1]
            ex.first_failure = f"Task {task_id} failed with message: {message}"
            ex.first_failure_reason = reason
