"""What a failed item means for itself and for its batch: whether it is worth another attempt (its retry
policy) and whether the batch goes on (the batch's stop rule). Pure: no I/O.

Cloud Run retries a failed task ``max_retries`` times whatever the reason, inside one execution. A retry policy
is the controller's own, per item: a new launch of the items that need one, after a backoff, only for the
failures it names (exit codes, an infrastructure failure, a timeout) and never for those it rules out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.durations import parse_duration
from controller.report import ItemResult, ItemState

MAX_ATTEMPTS = 10
MAX_BACKOFF_SECONDS = 3600.0
INFRASTRUCTURE = "infrastructure"  # no exit code: the container never ran, or Cloud Run refused the launch
TIMEOUT = "timeout"  # killed at its task timeout
REASONS = (INFRASTRUCTURE, TIMEOUT)
StopAction = Literal["cancel", "finish"]


def _seconds(value: str | float, name: str) -> float:
    seconds = parse_duration(value)
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_BACKOFF_SECONDS):
        raise ValueError(f"{name} must be between 0s and {MAX_BACKOFF_SECONDS / 60:.0f}m, got {value!r}")
    return seconds


class RetryPolicy(BaseModel):
    """An item's controller-side retries (spec ``retry:``, in ``defaults`` or an item, or ``--retry``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=2, ge=1, le=MAX_ATTEMPTS, description="attempts in all, the first included")
    on: list[int | str] | None = Field(
        default=None,
        description="the failures worth another attempt: exit codes, 'infrastructure', 'timeout'; default: any "
        "failure but those in 'never'",
    )
    never: list[int] = Field(default_factory=list, description="exit codes never retried (e.g. 2, a usage error)")
    backoff: str | float = Field(default=10.0, description="the wait before the second attempt; doubles after")
    backoff_max: str | float = Field(default=300.0, description="the longest wait between two attempts")

    @field_validator("on", "never")
    @classmethod
    def _codes(cls, values: list[Any] | None) -> list[Any] | None:
        for value in values or ():
            if isinstance(value, str) and value not in REASONS:
                raise ValueError(f"give exit codes or {' or '.join(map(repr, REASONS))}, got {value[:40]!r}")
            if isinstance(value, int) and not 1 <= value <= 255:
                raise ValueError(f"exit codes are 1 to 255 (0 is success), got {value}")
        return values

    @field_validator("backoff", "backoff_max")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        _seconds(value, "a backoff")
        return value

    def wait_seconds(self, attempt: int) -> float:
        """How long to wait before attempt ``attempt + 1`` once attempt ``attempt`` (from 1) failed."""
        first, longest = _seconds(self.backoff, "backoff"), _seconds(self.backoff_max, "backoff_max")
        return float(min(longest, first * 2.0 ** (attempt - 1)))

    def decide(self, result: ItemResult, attempt: int, *, refused: bool = False) -> tuple[bool, str]:
        """Whether a failed attempt (``attempt``, from 1) is retried, and why or why not, in words. ``refused``:
        Cloud Run refused its launch (an infrastructure failure, though the item never launched)."""
        what: int | str | None = INFRASTRUCTURE if refused else _failure(result)
        if what is None and result.state is ItemState.FAILED:
            return False, "not retried: its outcome is unknown, and another attempt could run it twice"
        if what is None:
            return False, _NOT_RETRIED.get(result.state, "not retried: it succeeded")
        if isinstance(what, int) and what in self.never:
            return False, f"not retried: exit code {what} is in retry.never"
        if self.on is not None and what not in self.on:
            return False, f"not retried: {_named(what)} is not in retry.on"
        if attempt >= self.attempts:
            return False, f"not retried: no attempts left ({attempt} of {self.attempts})"
        why = f"{_named(what)} is in retry.on" if self.on is not None else f"{_named(what)} (any failure is retried)"
        return True, f"retried: {why}"


_NOT_RETRIED = {
    ItemState.CANCELLED: "not retried: it was cancelled",
    ItemState.NOT_LAUNCHED: "not retried: it never launched",
}


def _failure(result: ItemResult) -> int | str | None:
    """What failed, as a retry policy names it; None for what is never retried: success, a cancellation, an
    outcome unknown (another attempt could run the item twice), an item that never launched."""
    if result.state is ItemState.TIMED_OUT:
        return TIMEOUT
    if result.state is not ItemState.FAILED or (result.reason or "").startswith("outcome unknown"):
        return None
    return result.exit_code if result.exit_code else INFRASTRUCTURE


def _named(what: int | str) -> str:
    if isinstance(what, int):
        return f"exit code {what}"
    return "an infrastructure failure" if what == INFRASTRUCTURE else "a timeout"


def parse_policy(fields: list[str]) -> dict[str, Any]:
    """``--retry`` values (``attempts=3``, ``on=137,143,infrastructure``, ``never=2``, ``backoff=5s``) as the
    fields of a ``RetryPolicy``; lists are comma-separated."""
    policy: dict[str, Any] = {}
    for text in fields:
        name, eq, value = str(text).partition("=")
        if not eq or name not in RetryPolicy.model_fields:
            known = ", ".join(RetryPolicy.model_fields)
            raise ValueError(f"{text[:40]!r}: give NAME=VALUE with NAME one of {known}")
        if name in {"on", "never"}:
            policy[name] = [int(v) if v.strip().isdigit() else v.strip() for v in value.split(",") if v.strip()]
        else:
            policy[name] = value
    return policy


@dataclass(frozen=True)
class StopRule:
    """Stop early (``max_failures``): once that many items failed for good, launch nothing more, and cancel
    what runs (``cancel``) or let it end (``finish``)."""

    max_failures: int | float  # a count (1 or more), or a share of the batch's items (over 0, at most 1)
    action: StopAction = "cancel"

    def threshold(self, items: int) -> int:
        """How many failed items stop a batch of ``items``."""
        if isinstance(self.max_failures, int):
            return self.max_failures
        return max(1, math.ceil(self.max_failures * items))

    def describe(self, items: int) -> str:
        share = "" if isinstance(self.max_failures, int) else f" ({self.max_failures:.0%} of {items:,} items)"
        return f"max_failures {self.threshold(items):,}{share}"


def parse_max_failures(value: Any) -> int | float:
    """A count (``10``) or a share of the items (``0.05``, ``"5%"``)."""
    if isinstance(value, bool):
        raise ValueError("max_failures is a count (10) or a share of the items (0.05 or '5%')")
    if isinstance(value, str):
        text = value.strip()
        try:
            number: float = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(
                f"max_failures is a count (10) or a share of the items (0.05 or '5%'), got {value!r}"
            ) from None
        value = int(number) if number.is_integer() and not text.endswith("%") else number
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"max_failures must be at least 1, got {value}")
        return value
    if isinstance(value, float) and 0 < value <= 1:
        return value
    raise ValueError(f"max_failures is a count of 1 or more or a share over 0 and at most 1 (100%), got {value!r}")


__all__ = ["INFRASTRUCTURE", "TIMEOUT", "RetryPolicy", "StopRule", "parse_max_failures", "parse_policy"]
