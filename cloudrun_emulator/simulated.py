"""Simulated task attempts, for controller scale benchmarks only: no process starts.

The rule: an attempt reads its container's arguments (after the execution's overrides) for two tokens,
``sim-seconds=S`` (how long it runs, default 0) and ``sim-exit=N`` (its exit code, default 0); other arguments
are ignored. It writes one stdout line saying what it simulates, as a real task writes its output, and then
waits ``S`` seconds: the execution's task timeout, a cancellation and the emulator's shutdown end it as they
end a process. Scheduling, retries and statuses are the scheduler's, the same as for real attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from cloudrun_emulator.processes import LineSink, Outcome

SECONDS_ARG = "sim-seconds="
EXIT_ARG = "sim-exit="


@dataclass(frozen=True)
class SimulatedCommand:
    seconds: float = 0.0
    exit_code: int = 0


def parse_args(args: Sequence[str]) -> SimulatedCommand | str:
    """What the arguments ask a simulated attempt to do, or why they cannot be read."""
    seconds, exit_code = 0.0, 0
    for arg in args:
        try:
            if arg.startswith(SECONDS_ARG):
                seconds = float(arg.removeprefix(SECONDS_ARG))
                if not 0 <= seconds < float("inf"):
                    raise ValueError
            elif arg.startswith(EXIT_ARG):
                exit_code = int(arg.removeprefix(EXIT_ARG))
                if not 0 <= exit_code <= 255:
                    raise ValueError
        except ValueError:
            return f"simulated task argument {arg!r} is not {SECONDS_ARG}SECONDS (>= 0) or {EXIT_ARG}0..255"
    return SimulatedCommand(seconds, exit_code)


class SimulatedAttempts:
    """Live simulated attempts by key, so one can be stopped (a cancel) or all of them (shutdown)."""

    def __init__(self) -> None:
        self._live: dict[str, asyncio.Event] = {}

    @property
    def running(self) -> int:
        return len(self._live)

    async def run(self, key: str, command: SimulatedCommand, timeout: float, on_line: LineSink) -> Outcome:
        on_line("stdout", f"simulated task: runs {command.seconds:g} s, exits {command.exit_code}")
        stop = self._live[key] = asyncio.Event()
        try:
            await asyncio.wait_for(stop.wait(), min(command.seconds, timeout))
        except TimeoutError:
            if command.seconds >= timeout:
                return Outcome(exit_code=137, timed_out=True)
            return Outcome(exit_code=command.exit_code)
        finally:
            del self._live[key]
        # Stopped by a cancel or the emulator's shutdown, as SIGTERM ends a container.
        return Outcome(exit_code=143, killed_by_request=True)

    def stop(self, key: str) -> None:
        if key in self._live:
            self._live[key].set()

    def stop_all(self) -> None:
        for stop in self._live.values():
            stop.set()
