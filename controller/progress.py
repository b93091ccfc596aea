"""Live progress of a batch on the command line.

On a terminal it is a rich live bar with counts by state, rate and time left; anywhere else (CI logs, files)
it is one plain line every ``interval`` seconds and one at the end, so logs stay readable and short. Time
comes from an injected clock: tests drive it, nothing here sleeps.

Log records (Prefect's and ours) go through the same rich console as the bar (``console_logging``): rich
prints them above the live display, so a log line never lands inside the bar or leaves a stale copy of it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from controller.states import InFlight, ItemState
from controller.summary import format_seconds, state_label

KEYS = frozenset({*InFlight, *ItemState})
# The rate is measured over the last minute: long enough to smooth out polls that finish many items at
# once, short enough to follow a batch that speeds up once its launches are all in.
RATE_WINDOW = 60.0
_SAMPLE_EVERY = 0.5  # seconds between rate samples, so calling update() in a tight loop stays O(1) memory
_REFRESH_EVERY = 0.1  # seconds between terminal redraws


class Progress:
    """Progress of ``total`` items, fed with counts by state after every poll."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        is_terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 10.0,
        console: Console | None = None,
    ) -> None:
        self.total = total
        self._console = console
        self._stream = stream if stream is not None else console.file if console is not None else sys.stderr
        if is_terminal is None:
            is_terminal = console.is_terminal if console is not None else self._stream.isatty()
        self._terminal = is_terminal
        self._clock = clock
        self._interval = interval
        self._started = clock()
        self._counts: dict[str, int] = {}
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])
        self._last_output: float | None = None
        self._live: Live | None = None
        self._closed = False

    # Counting ------------------------------------------------------------------------------------------

    @property
    def done(self) -> int:
        return sum(self._counts.get(state, 0) for state in ItemState)

    def rate(self) -> float | None:
        """Items finished per second over the recent window; None until there is time to measure."""
        now = self._clock()
        then, done_then = self._samples[0]
        if now - then < 1.0:
            return None
        return max(self.done - done_then, 0) / (now - then)

    def eta(self) -> float | None:
        """Seconds left at the recent rate; None while nothing has finished recently."""
        rate = self.rate()
        if not rate:
            return None
        return (self.total - self.done) / rate

    def update(self, counts: Mapping[str, int]) -> None:
        """Record the current counts ("pending", "running" and item states) and redraw or log if it is time."""
        unknown = set(counts) - KEYS
        if unknown:
            raise ValueError(f"unknown progress keys {sorted(unknown)}; expected some of {sorted(KEYS)}")
        if self._closed:
            return
        self._counts = dict(counts)
        now = self._clock()
        if now - self._samples[-1][0] >= _SAMPLE_EVERY:
            self._samples.append((now, self.done))
        # Keep one sample at or before the window's start so the rate always spans a full window.
        while len(self._samples) > 1 and self._samples[1][0] <= now - RATE_WINDOW:
            self._samples.popleft()
        if self._terminal:
            self._redraw(now)
        elif self._last_output is None or now - self._last_output >= self._interval:
            self._write_line(self.line(), now)

    def close(self) -> None:
        """Show the final state: stop the live display, or write the closing line."""
        if self._closed:
            return
        self._closed = True
        now = self._clock()
        if self._terminal:
            self._redraw(now, force=True)
            if self._live is not None:
                self._live.stop()
        else:
            self._write_line(self.final_line(), now)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Rendering -----------------------------------------------------------------------------------------

    def _states_text(self) -> str:
        # Succeeded is always shown so the parenthesis is never empty; other outcomes only when they occur.
        parts = [f"{self._counts.get(ItemState.SUCCEEDED, 0):,} succeeded"]
        parts += [
            f"{self._counts[state]:,} {state_label(state)}"
            for state in ItemState
            if state is not ItemState.SUCCEEDED and self._counts.get(state, 0)
        ]
        return ", ".join(parts)

    def _in_flight_text(self) -> list[str]:
        return [f"{self._counts[key]:,} {key.label}" for key in InFlight if self._counts.get(key, 0)]

    def line(self) -> str:
        """One plain progress line, as written to non-terminal output."""
        rate = self.rate()
        parts = [
            f"[fanout] {self.done:,}/{self.total:,} done ({self._states_text()})",
            *self._in_flight_text(),
            _format_rate(rate),
            f"ETA {format_seconds(self.eta())}",
        ]
        return " · ".join(parts)

    def final_line(self) -> str:
        """The closing line: final counts, overall rate and elapsed time."""
        elapsed = self._clock() - self._started
        overall = self.done / elapsed if elapsed > 0 else None
        parts = [
            f"[fanout] {self.done:,}/{self.total:,} done ({self._states_text()})",
            *self._in_flight_text(),
            f"{_format_rate(overall)} overall",
            f"took {format_seconds(elapsed)}",
        ]
        return " · ".join(parts)

    def _write_line(self, line: str, now: float) -> None:
        self._last_output = now
        self._stream.write(line + "\n")
        self._stream.flush()

    def _redraw(self, now: float, *, force: bool = False) -> None:
        if not force and self._last_output is not None and now - self._last_output < _REFRESH_EVERY:
            return
        self._last_output = now
        if self._live is None:
            # Only a standard stream is worth redirecting: then text printed meanwhile goes above the bar
            # instead of through it (log records do so through the shared console).
            standard = self._stream in (sys.stdout, sys.stderr)
            self._live = Live(
                self._renderable(),
                console=self._console or Console(file=self._stream, force_terminal=True),
                auto_refresh=False,
                redirect_stdout=standard,
                redirect_stderr=standard,
            )
            self._live.start()
        self._live.update(self._renderable(), refresh=True)

    def _renderable(self) -> Group:
        header = Text(
            f"{self.done:,}/{self.total:,} done · {_format_rate(self.rate())} · ETA {format_seconds(self.eta())}"
        )
        states = Text()
        for state in ItemState:
            count = self._counts.get(state, 0)
            if count or state is ItemState.SUCCEEDED:
                states.append(f"● {count:,} {state_label(state)}  ", style=state.style)
        for key in InFlight:
            states.append(f"● {self._counts.get(key, 0):,} {key.label}  ", style=key.style)
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            Text("fanout", style="bold"),
            ProgressBar(total=max(self.total, 1), completed=self.done, width=24),
            header,
        )
        return Group(grid, states)


def log_to_console(
    console: Console, *, quiet: bool = False, reported: tuple[type[BaseException], ...] = ()
) -> None:
    """Send log records to ``console`` from now on, in place of Prefect's own console handlers.

    ``quiet``: warnings and errors only, so a quiet run prints its summary and what went wrong, not Prefect's
    INFO lines (up to the temporary server's goodbye at exit). Prefect still sends every record of the flow
    run to its API. ``reported``: exceptions the command reports itself, as one line that says how to fix
    them; records that carry one (Prefect's engine logs the flow's exception with its traceback) are left
    out, so a user's mistake never reaches the console as a traceback.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    handler = _LineHandler(console, logging.WARNING if quiet else logging.INFO)
    handler.addFilter(_not_per_task)
    if reported:
        handler.addFilter(lambda record: not (record.exc_info and isinstance(record.exc_info[1], reported)))
    root = logging.getLogger()
    for logger in [root, *logging.Logger.manager.loggerDict.values()]:
        if not isinstance(logger, logging.Logger):
            continue
        old = [h for h in logger.handlers if isinstance(h, PrefectConsoleHandler)]
        for h in old:
            logger.removeHandler(h)
        if old and logger is not root:  # a logger that does not propagate (uvicorn's) keeps its own
            logger.addHandler(handler)
    root.addHandler(handler)


_LEVEL_STYLES = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "bold red"}


class _LineHandler(logging.Handler):
    """Each record as whole lines on the console, never wrapped here: a terminal soft-wraps a long line and a
    log file keeps it, so a URL (Prefect's "View at" link) or a word is never broken in two. Printed through
    the console, a record lands above the live bar, never inside it."""

    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self.console = console
        self.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)-7s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.console.print(
                Text(line, style=_LEVEL_STYLES.get(record.levelno, "")), soft_wrap=True, highlight=False
            )
        except Exception:
            self.handleError(record)


_TEMPORARY_SERVER = ("Starting temporary server on ", "Stopping temporary server on ")


def _not_per_task(record: logging.LogRecord) -> bool:
    """Leave out routine lines that do not help whoever watches the batch: task runs' ("Finished in state
    Completed()", one per launch, thousands in a per-item batch; the progress display counts them), and the
    temporary Prefect server's start and stop, whose address is dead once the command ends. Warnings and
    errors stay."""
    if record.levelno >= logging.WARNING:
        return True
    if record.name.startswith("prefect.task_runs"):
        return False
    return not (record.name == "prefect" and str(record.msg).startswith(_TEMPORARY_SERVER))


def _format_rate(rate: float | None) -> str:
    if rate is None:
        return "- items/s"
    if 0 < rate < 0.1:
        return f"{rate * 60:.1f} items/min"
    return f"{rate:.1f} items/s"
