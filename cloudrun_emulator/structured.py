"""Cloud Logging's special JSON fields: the keys of a task's JSON line that become fields of its log entry.

Cloud Logging ("Structured logging", "Special JSON fields in messages") moves these out of ``jsonPayload``
onto the LogEntry: ``logging.googleapis.com/labels`` (merged into the entry's labels), ``.../trace``,
``.../spanId``, ``.../trace_sampled``, ``.../insertId``, ``.../operation``, ``.../sourceLocation``,
``httpRequest``, and the time (``timestamp``, ``timestampSeconds`` + ``timestampNanos``, ``time``);
``severity`` is the log store's, ``message`` stays in the payload as the entry's text. A value of the wrong
shape stays in the payload. Each moved value is parsed with the LogEntry message and kept in its canonical
JSON form, the one the API answers with (an int64 ``sourceLocation.line`` as a string, say).
"""

from __future__ import annotations

from typing import Any

from google.cloud.logging_v2.types import LogEntry
from google.protobuf import json_format, timestamp_pb2

from cloudrun_emulator.timefmt import parse_rfc3339_micros

_ENTRY = LogEntry.pb()
PREFIX = "logging.googleapis.com/"
# JSON key in the line -> LogEntry field (JSON name).
MOVED = {
    "httpRequest": "httpRequest",
    PREFIX + "insertId": "insertId",
    PREFIX + "labels": "labels",
    PREFIX + "operation": "operation",
    PREFIX + "sourceLocation": "sourceLocation",
    PREFIX + "spanId": "spanId",
    PREFIX + "trace": "trace",
    PREFIX + "trace_sampled": "traceSampled",
}

# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def take_special_fields(payload: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Remove the special fields from ``payload``: the entry fields they set, and the entry's time in epoch
    microseconds when the line gives one (else None)."""
    fields: dict[str, Any] = {}
    for key, field in MOVED.items():
        if key not in payload:
            continue
        canonical = _canonical(field, payload[key])
        if canonical is not None:
            del payload[key]
            # An empty value (StructuredLogHandler writes "trace": "" and "httpRequest": {} when it has
            # neither) sets nothing.
            fields.update((k, v) for k, v in canonical.items() if v != {})
    return fields, _take_time(payload)


def _canonical(field: str, value: Any) -> dict[str, Any] | None:
    """``{field: value}`` as the LogEntry's JSON, or None when the value does not fit the field."""
    try:
        entry = json_format.ParseDict({field: value}, _ENTRY())
    except (json_format.ParseError, TypeError, ValueError):
        return None
    found: dict[str, Any] = json_format.MessageToDict(entry)
    return found


def _take_time(payload: dict[str, Any]) -> int | None:
    stamp = payload.get("timestamp")
    if isinstance(stamp, dict):
        micros = _from_parts(stamp.get("seconds"), stamp.get("nanos", 0))
        if micros is not None:
            del payload["timestamp"]
        return micros
    if "timestampSeconds" in payload:
        micros = _from_parts(payload["timestampSeconds"], payload.get("timestampNanos", 0))
        if micros is not None:
            del payload["timestampSeconds"]
            payload.pop("timestampNanos", None)
        return micros
    for key in ("timestamp", "time"):
        text = payload.get(key)
        if isinstance(text, str):
            try:
                micros = parse_rfc3339_micros(text)
            except ValueError:
                continue
            del payload[key]
            return micros
    return None


def _from_parts(seconds: Any, nanos: Any) -> int | None:
    try:
        stamp = timestamp_pb2.Timestamp(seconds=int(seconds), nanos=int(nanos))
    except (TypeError, ValueError):
        return None
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos < 1_000_000_000:
        return None
    micros: int = stamp.ToMicroseconds()
    return micros
