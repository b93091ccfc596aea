"""Timestamps as Google's JSON APIs write them (RFC 3339, UTC, "Z")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(epoch_seconds: float) -> str:
    """``2026-11-28T16:09:48.123456Z`` for a POSIX time."""
    return _iso(datetime.fromtimestamp(epoch_seconds, UTC))


def rfc3339_micros(epoch_micros: int) -> str:
    """``rfc3339`` for a POSIX time in whole microseconds (exact: no float rounding)."""
    seconds, micros = divmod(epoch_micros, 1_000_000)
    return _iso(datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros))


def _iso(stamp: datetime) -> str:
    # isoformat, not strftime: several times faster, and the emulator writes a timestamp per field it renders.
    return stamp.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_rfc3339_micros(text: str) -> int:
    """Microseconds since the epoch for an RFC 3339 timestamp; raises ValueError if it is not one."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // timedelta(microseconds=1)
