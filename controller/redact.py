"""Redaction of literal secrets from every text that leaves the controller.

A spec may pass a literal as ``{value: ...}``: Cloud Run gets it, nobody reads it back. It is replaced by
``***`` in reasons, problems, labels and log tails, on the text a person reads: a JSON log line is
read as its ``message`` or as JSON (never a Python repr), and the spellings a secret takes inside a JSON
string are redacted too, so a secret with a backslash or a quote in it cannot leak escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
# Shorter literals cannot be redacted safely: masking every "a" or "42" in a log line garbles it and the
# pattern of masks gives the secret away. The spec refuses them (controller.spec).
MIN_SECRET_CHARS = 8


def _spellings(secret: str) -> set[str]:
    """The secret as written, and as it reads inside a JSON string (ASCII-only or not)."""
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}


class Redactor:
    """Replaces sensitive literal values, whole and longest first, in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        spellings = {spelling for secret in secrets if secret for spelling in _spellings(secret)}
        # Longest first: when one secret contains another, the longer one is masked whole rather than the
        # shorter one leaving the rest of the longer in clear.
        self._spellings = sorted(spellings, key=lambda s: (-len(s), s))

    def __call__(self, text: str) -> str:
        for spelling in self._spellings:
            if spelling in text:
                text = text.replace(spelling, MASK)
        return text


# A lone surrogate: a JSON "\ud800" escape in a log entry decodes to one, and no UTF-8 text can hold it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def as_text(text: str) -> str:
    """``text`` with each lone surrogate read as U+FFFD, so that it can be written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def payload_text(payload: Any) -> str:
    """The line a person reads for a log entry's payload: its text, its ``message``, or else its JSON, with
    each lone surrogate read as U+FFFD (so the line can be written to a report).

    Never a Python repr: a redactor looks for a secret as written and as JSON spells it, not as repr does
    for every kind of value.
    """
    if payload is None:
        return ""
    if isinstance(payload, str):
        text = payload
    elif isinstance(payload, dict) and isinstance(payload.get("message"), str):
        text = str(payload["message"])
    else:
        text = json.dumps(payload, ensure_ascii=False, default=str, sort_keys=True)
    return as_text(text)


__all__ = ["MASK", "MIN_SECRET_CHARS", "Redactor", "as_text", "payload_text"]
