"""Durations as users write them ("90s", "10m", "1h30m", 45) and as the Cloud Run API wants them ("90s")."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration given as a number of seconds or a string like "1h30m", "90s", "2.5s".

    Raises ValueError with a message a user can act on.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '90s' or '10m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"expected a duration such as '90s', '10m' or '1h30m', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def to_api_duration(seconds: float) -> str:
    """Cloud Run's JSON form of a duration: decimal seconds with an "s" suffix."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3f}".rstrip("0") + "s"
