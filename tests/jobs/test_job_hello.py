from __future__ import annotations

import pytest


def test_greets_every_name_with_the_configured_greeting(job_module, capsys, monkeypatch):
    hello = job_module("hello")
    monkeypatch.setenv("GREETING", "Hej")
    monkeypatch.setenv("CLOUD_RUN_TASK_INDEX", "7")

    assert hello.main(["Ada", "Grace"]) == 0

    assert capsys.readouterr().out.splitlines() == ["[task 7] Hej, Ada!", "[task 7] Hej, Grace!"]


def test_defaults_to_hello_world(job_module, capsys, monkeypatch):
    hello = job_module("hello")
    monkeypatch.delenv("GREETING", raising=False)
    monkeypatch.delenv("CLOUD_RUN_TASK_INDEX", raising=False)

    assert hello.main([]) == 0

    assert capsys.readouterr().out == "[task 0] Hello, world!\n"


def test_negative_sleep_is_a_usage_error(job_module):
    with pytest.raises(SystemExit) as exc:
        job_module("hello").main(["--sleep", "-1"])
    assert exc.value.code == 2
