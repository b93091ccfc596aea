"""What the runner knows of one launch as the batch runs: its execution as last seen, why it never started or
whether that could not be checked, its tasks once read. The runner (controller.batch) updates it; the task
slots (controller.slots) and the outcomes (controller.outcomes) read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.cloudrun import ExecutionStatus
from controller.plan import Launch
from controller.tasktable import TaskTable


@dataclass
class LaunchState:
    launch: Launch
    execution: ExecutionStatus | None = None
    error: str | None = None  # why it never started
    unverified: str | None = None  # RunJob's answer was lost and whether it started could not be checked
    tasks: TaskTable | None = None  # as read once the execution ended (controller.tasktable)
    adopted: bool = False  # found already running (resume, or a dropped response to RunJob)
    refused: bool = False  # Cloud Run refused the run (``error`` says how): an infrastructure failure

    @property
    def active(self) -> bool:
        return self.execution is not None and not self.execution.done
