"""Timestamps as Google's JSON APIs write them (RFC 3339, UTC, "Z")."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(epoch_seconds: float) -> str:
    """``2026-11-28T16:09:48.123456Z`` for a POSIX time."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
