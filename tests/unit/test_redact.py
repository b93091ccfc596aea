"""Redaction of literal secrets on the text a person reads."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from controller.logs import TailTarget, fetch_tails
from controller.quota import Unlimited
from controller.redact import MASK, Redactor, payload_text


def test_whole_values_are_masked_longest_first() -> None:
    # Whichever order the set gives, the longer secret is masked whole: no tail of it left in clear.
    redact = Redactor({"abcdefgh", "abcdefgh-and-more"})
    assert redact("x abcdefgh-and-more y abcdefgh z") == f"x {MASK} y {MASK} z"


@pytest.mark.parametrize("secret", ["back\\slash-secret", 'quote"d-secret', "tab\tsecret-1", "naïve-sécret"])
def test_a_secret_is_masked_in_json_text_whatever_it_holds(secret: str) -> None:
    redact = Redactor({secret})
    for line in (json.dumps({"token": secret}), json.dumps({"token": secret}, ensure_ascii=False)):
        assert secret not in redact(line)
        assert json.dumps(secret)[1:-1] not in redact(line)
        assert MASK in redact(line)


def test_structured_payloads_read_as_their_message_or_as_json_never_a_repr() -> None:
    assert payload_text({"message": "hello", "severity": "INFO"}) == "hello"
    assert payload_text({"token": "a\\b"}) == '{"token": "a\\\\b"}'
    assert payload_text(None) == ""
    assert payload_text("plain") == "plain"


class _Entries:
    """Cloud Logging's list_entries as the client returns it: an iterator of entries with labels."""

    def __init__(self, payloads: list[Any]) -> None:
        self.payloads = payloads

    def list_entries(self, **_: Any) -> Any:
        labels = {"run.googleapis.com/execution_name": "exec-1"}
        return iter([SimpleNamespace(payload=p, labels=labels) for p in self.payloads])


def test_log_tails_of_json_lines_never_leak_a_secret_with_a_backslash() -> None:
    secret = "C:\\keys\\prod-7731"
    client = _Entries([{"level": "info", "token": secret}, {"message": f"using {secret}"}])
    tails, _ = fetch_tails(
        client,
        "p",
        [TailTarget(key="item", execution="exec-1", task_index=None)],
        limiter=Unlimited(),
        redact=Redactor({secret}),
    )
    text = "\n".join(tails["item"].fields()["log_tail"])
    assert "prod-7731" not in text
    assert text.count(MASK) == 2
