from __future__ import annotations

import json

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


def test_with_result_the_greetings_are_written_where_the_controller_says(job_module, capsys, monkeypatch, tmp_path):
    hello = job_module("hello")
    monkeypatch.setenv("GREETING", "Hi")
    monkeypatch.setenv("FANOUT_RESULT_FILE", str(tmp_path / "result.json"))

    assert hello.main(["Ada"]) == 0
    assert not (tmp_path / "result.json").exists()  # only when asked
    assert hello.main(["--result", "Ada", "Grace"]) == 0

    assert json.loads((tmp_path / "result.json").read_text()) == ["Hi, Ada!", "Hi, Grace!"]
