"""The batch-wide cap on running tasks (``--max-running-tasks``): launches wait for room, the watcher frees it.

Cloud Run starts an execution's tasks on its own, up to the job's parallelism, and RunJob cannot change that
parallelism; so the cap is kept launch by launch. ``controller.plan`` makes every launch fit the cap on its
own (``Launch.concurrent_tasks``); here a launch takes that many slots before its RunJob is sent, and keeps
as many as its execution may still run at once, as last seen by the watcher: never more than its tasks not yet
finished. The count can only be high, never low, so at no moment do more tasks run than the cap.
"""

from __future__ import annotations

import threading

from controller.launch_state import LaunchState


def may_run(state: LaunchState) -> int:
    """How many of a launch's tasks may be running now, as far as the controller knows."""
    launch, execution = state.launch, state.execution
    if execution is None:
        # In flight (or RunJob's answer lost): it may have started every task it can; refused: nothing.
        return 0 if state.error is not None else launch.concurrent_tasks
    if execution.done:
        return 0
    return min(launch.concurrent_tasks, execution.task_count - execution.finished_tasks)


class TaskSlots:
    """At most ``limit`` tasks running at once (no limit when None), shared by the launch threads.

    Among the launches waiting, the lowest index goes first, so a waiting launch is not overtaken by a later,
    smaller one; a launch whose thread has not reached ``take`` yet is not waited for.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._holders: dict[int, LaunchState] = {}
        self._waiting: set[int] = set()
        self._closed: str | None = None
        self._changed = threading.Condition()

    @property
    def waiting(self) -> bool:
        """Whether a launch waits for room (the watcher then polls at its fastest, to free slots soon)."""
        return bool(self._waiting)

    def running(self) -> int:
        """Tasks that may be running now, by the last look."""
        with self._changed:
            return self._in_use()

    def take(self, state: LaunchState) -> str | None:
        """Wait until the launch fits under the cap and hold its slots; returns None then, or why it may not
        start (``close``)."""
        if self.limit is None:
            return None
        need = state.launch.concurrent_tasks
        if need > self.limit:
            raise ValueError(f"launch {state.launch.key} runs {need} tasks at once, over the cap of {self.limit}")
        index = state.launch.index
        with self._changed:
            self._waiting.add(index)
            try:
                while self._closed is None:
                    if index == min(self._waiting) and self._in_use() + need <= self.limit:
                        self._holders[index] = state
                        return None
                    self._changed.wait()
                return self._closed
            finally:
                self._waiting.discard(index)
                self._changed.notify_all()

    def hold(self, state: LaunchState) -> None:
        """Count an execution found already running (a resumed batch) without waiting."""
        if self.limit is not None:
            with self._changed:
                self._holders[state.launch.index] = state

    def forget(self, state: LaunchState) -> None:
        """A launch Cloud Run was asked about and did not start: its slots are free."""
        with self._changed:
            self._holders.pop(state.launch.index, None)
            self._changed.notify_all()

    def changed(self) -> None:
        """Launch states changed (a launch started or was refused, a poll came back): wake who may fit now."""
        if self.limit is not None:
            with self._changed:
                self._changed.notify_all()

    def close(self, reason: str) -> None:
        """No launch gets slots from now on; those waiting return ``reason`` (the batch was cancelled, or the
        watcher stopped, so nobody would free slots any more)."""
        with self._changed:
            if self._closed is None:
                self._closed = reason
            self._changed.notify_all()

    def _in_use(self) -> int:
        in_use = 0
        for index, state in list(self._holders.items()):
            if (count := may_run(state)) == 0:
                del self._holders[index]
            in_use += count
        return in_use
