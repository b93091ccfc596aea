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


@pytest.mark.parametrize(
    "argv", [["--sleep", "-1"], ["--sleep", "nan"], ["--sleep=inf"], ["--sleep"], ["--shout", "Ada"]]
)
def test_impossible_requests_are_usage_errors_with_the_usage(job_module, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        job_module("hello").main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("usage: hello [NAME...]")


def test_names_after_a_double_dash_may_start_with_a_dash(job_module, capsys, monkeypatch):
    monkeypatch.delenv("GREETING", raising=False)
    assert job_module("hello").main(["--sleep=0", "--", "-x"]) == 0
    assert capsys.readouterr().out.endswith("Hello, -x!\n")


def test_with_result_the_greetings_are_written_where_the_controller_says(job_module, capsys, monkeypatch, tmp_path):
    hello = job_module("hello")
    monkeypatch.setenv("GREETING", "Hi")
    monkeypatch.setenv("FANOUT_RESULT_FILE", str(tmp_path / "result.json"))

    assert hello.main(["Ada"]) == 0
    assert not (tmp_path / "result.json").exists()  # only when asked
    assert hello.main(["--result", "Ada", "Grace"]) == 0

    assert json.loads((tmp_path / "result.json").read_text()) == ["Hi, Ada!", "Hi, Grace!"]
