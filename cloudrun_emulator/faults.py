"""Fault injection: configured, seeded misbehaviour of the emulated APIs and of task processes.

Every decision draws from a random stream of its own (one per API method, one for task kills, one for stuck
executions), each seeded from ``Faults.seed``, so a run that makes the same calls in the same order sees the
same faults, whatever other methods were called in between.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudrun_emulator.errors import STATUS_FOR_HTTP


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodFaults(_Frozen):
    """Faults for one API method (or the default for all of them).

    ``error_rates`` maps an HTTP code (429, 500 or 503) to the probability that a request is answered with it
    instead of being served. ``drop_rate`` is the probability that the server does the work and then loses the
    answer: ``drop_mode`` "503" answers 503 UNAVAILABLE, "close" closes the connection without an answer.
    ``list_lag_seconds`` makes a List method eventually consistent: its answers leave out resources (and log
    entries) created less than that many seconds ago.
    """

    error_rates: dict[int, float] = {}
    latency_seconds: float = Field(default=0.0, ge=0)
    latency_jitter_seconds: float = Field(default=0.0, ge=0)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    drop_mode: Literal["503", "close"] = "503"
    list_lag_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _rates_valid(self) -> MethodFaults:
        for code, rate in self.error_rates.items():
            if code not in STATUS_FOR_HTTP:
                raise ValueError(f"error_rates: code {code} is not one of {sorted(STATUS_FOR_HTTP)}")
            if not 0 <= rate <= 1:
                raise ValueError(f"error_rates: rate for {code} must be between 0 and 1, got {rate}")
        if sum(self.error_rates.values()) > 1:
            raise ValueError("error_rates: the rates add up to more than 1")
        return self


class Faults(_Frozen):
    """All fault injection settings; the default injects nothing.

    ``methods`` keys are stats method names (``"Jobs.RunJob"``) or a service wildcard (``"Executions.*"``);
    the most specific entry wins, then ``default``. Emulator endpoints (``/_emulator/*``) never see faults.
    ``task_start_delay_seconds`` is how long each task attempt takes to start its container once its volumes are
    mounted (an image pull, a slow start); cancelling the execution cuts it short.
    """

    seed: int = 0
    default: MethodFaults = MethodFaults()
    methods: dict[str, MethodFaults] = {}
    task_kill_rate: float = Field(default=0.0, ge=0, le=1)
    task_kill_delay_seconds: tuple[float, float] = (0.0, 1.0)
    stuck_execution_rate: float = Field(default=0.0, ge=0, le=1)
    task_start_delay_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _delay_range(self) -> Faults:
        low, high = self.task_kill_delay_seconds
        if not 0 <= low <= high:
            raise ValueError("task_kill_delay_seconds must be [low, high] with 0 <= low <= high")
        return self

    def for_method(self, method: str) -> MethodFaults:
        """The faults that apply to one method."""
        if method in self.methods:
            return self.methods[method]
        return self.methods.get(method.split(".", 1)[0] + ".*", self.default)

    @classmethod
    def from_file(cls, path: str | Path) -> Faults:
        """Read faults from a YAML or JSON file (JSON is YAML, so one parser reads both)."""
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) if text.strip() else {}
        return cls.model_validate(data or {})


class FaultInjector:
    """Draws fault decisions for the current ``Faults``; thread-safe, replaceable at runtime."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, random.Random] = {}
        self._faults = Faults()
        self.set(faults or Faults())

    @property
    def faults(self) -> Faults:
        return self._faults

    def set(self, faults: Faults) -> None:
        """Replace the faults and restart every random stream from the new seed."""
        with self._lock:
            self._faults = faults
            self._streams = {}

    def _draw(self, stream: str) -> float:
        with self._lock:
            rng = self._streams.get(stream)
            if rng is None:
                # Reproducible on purpose: fault decisions are not secrets.
                rng = self._streams[stream] = random.Random(f"{self._faults.seed}/{stream}")  # noqa: S311
            return rng.random()

    def latency(self, method: str) -> float:
        """Seconds to delay this request before serving it."""
        mf = self._faults.for_method(method)
        if mf.latency_jitter_seconds == 0:
            return mf.latency_seconds
        return mf.latency_seconds + mf.latency_jitter_seconds * self._draw(f"latency/{method}")

    def error_code(self, method: str) -> int | None:
        """An HTTP error code to answer instead of serving the request, or None to serve it."""
        rates = self._faults.for_method(method).error_rates
        if not rates:
            return None
        roll = self._draw(f"errors/{method}")
        for code in sorted(rates):
            if roll < rates[code]:
                return code
            roll -= rates[code]
        return None

    def list_lag(self, method: str) -> float:
        """Seconds a new resource stays out of this List method's answers."""
        return self._faults.for_method(method).list_lag_seconds

    def drop(self, method: str) -> Literal["503", "close"] | None:
        """How to lose the answer after the server acted, or None to answer normally."""
        mf = self._faults.for_method(method)
        if mf.drop_rate and self._draw(f"drop/{method}") < mf.drop_rate:
            return mf.drop_mode
        return None

    def task_kill_delay(self) -> float | None:
        """Seconds after which to SIGKILL a task attempt that just started, or None to leave it alone."""
        faults = self._faults
        if not faults.task_kill_rate or self._draw("task_kill") >= faults.task_kill_rate:
            return None
        low, high = faults.task_kill_delay_seconds
        return low + (high - low) * self._draw("task_kill_delay")

    def task_start_delay(self) -> float:
        """Seconds a task attempt's container takes to start."""
        return self._faults.task_start_delay_seconds

    def execution_stuck(self) -> bool:
        """Whether a new execution should stay pending and never start its tasks."""
        rate = self._faults.stuck_execution_rate
        return bool(rate) and self._draw("stuck_execution") < rate
