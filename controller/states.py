"""The item states, as one table: each state's name, rank, label and colours, terminal (``ItemState``: every
item ends in one) or not (``InFlight``: pending, running).

Every renderer reads its rows from here: the outcomes (which state an item of several tasks takes), the CLI
summary and the Markdown artifact (in which order items that did not succeed are listed, how a state reads,
its colour), the live progress display, and the HTML report (its colours, filter, sort order and timeline
are built from the page data, which carries these rows). A new state is one row of ``ItemState``.

The rank is the one severity order, worst first: failed, timed out, cancelled, not launched, succeeded. An
item whose tasks ended differently takes the worst of their states, and items that did not succeed are
listed worst first. Failed comes before timed out because a command that exited non-zero is broken whatever
its timeout, where a timed-out one may only need more time; both come before the states of items that did
not run to their end, because after a cancelled batch thousands of those would hide the ones that broke.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class _Row(StrEnum):
    """A state's value (as report.json spells it) and its row of the table."""

    rank: int  # severity, 0 the worst; in tens, so that a new state slots in between without renumbering
    label: str  # how it reads in prose
    style: str  # rich style: the CLI summary and the live progress display

    def __new__(cls, value: str, *row: Any) -> _Row:
        member = str.__new__(cls, value)
        member._value_ = value
        member._set_row(*row)
        return member

    def _set_row(self, rank: int, label: str, style: str) -> None:
        self.rank, self.label, self.style = rank, label, style


class ItemState(_Row):
    """Terminal state of one item. Every item of a batch ends in exactly one of these.

    A row: value, rank, label, rich style, the HTML report's light and dark colours, whether an item in the
    state can have run (a bar on the HTML timeline). The declaration order is the order of the counts in
    every rendering and of the HTML page data's state codes.
    """

    light: str
    dark: str
    ran: bool

    def _set_row(  # type: ignore[override]  # the terminal states' rows have the HTML report's columns too
        self, rank: int, label: str, style: str, light: str, dark: str, ran: bool
    ) -> None:
        super()._set_row(rank, label, style)
        self.light, self.dark, self.ran = light, dark, ran

    SUCCEEDED = "succeeded", 40, "succeeded", "green", "#2da44e", "#3fb950", True
    FAILED = "failed", 0, "failed", "red", "#cf222e", "#f85149", True  # ran and exited non-zero (after its retries)
    TIMED_OUT = "timed_out", 10, "timed out", "magenta", "#8250df", "#a371f7", True  # killed at its task timeout
    # cancelled by the user, a deadline or Prefect while pending or running
    CANCELLED = "cancelled", 20, "cancelled", "yellow", "#bf8700", "#d29922", True
    # never started: launch refused, batch cancelled or failed first
    NOT_LAUNCHED = "not_launched", 30, "not launched", "bright_black", "#8c959f", "#6e7681", False

    @property
    def ok(self) -> bool:
        return self is ItemState.SUCCEEDED


class InFlight(_Row):
    """Where an item that has not ended is, as the live progress display counts it (never in a report); they
    rank after every terminal state."""

    RUNNING = "running", 50, "running", "cyan"
    PENDING = "pending", 60, "pending", "dim"

