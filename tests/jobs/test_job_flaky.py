from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("attempt", "exit_code", "fail_attempts", "expected"),
    [
        (0, None, None, 0),  # no flags: succeeds
        (0, 3, None, 3),  # --exit-code alone: every attempt fails with it
        (5, 3, None, 3),
        (0, None, 2, 1),  # --fail-attempts alone fails with 1 ...
        (1, None, 2, 1),
        (2, None, 2, 0),  # ... until the attempt count reaches K
        (0, 4, 1, 4),  # both: the first K attempts fail with N
        (1, 4, 1, 0),
        (0, 0, None, 0),
    ],
)
def test_exit_code_per_attempt(job_module, attempt, exit_code, fail_attempts, expected):
    assert job_module("flaky").exit_code_for(attempt, exit_code, fail_attempts) == expected


def test_reads_the_attempt_cloud_run_sets(job_module, monkeypatch, capsys):
    flaky = job_module("flaky")
    monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", "0")
    assert flaky.main(["--fail-attempts", "1", "--exit-code", "9"]) == 9
    monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", "1")
    assert flaky.main(["--fail-attempts", "1", "--exit-code", "9"]) == 0
    captured = capsys.readouterr()
    assert "attempt 0 failing with exit code 9" in captured.err
    assert "attempt 1 succeeded" in captured.out


def test_fail_runs_reads_the_controllers_attempt(job_module, monkeypatch):
    """Every Cloud Run attempt of the first controller-side attempts fails; a later one succeeds at once."""
    flaky = job_module("flaky")
    monkeypatch.delenv("FANOUT_ATTEMPT", raising=False)
    for task_attempt in ("0", "1"):
        monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", task_attempt)
        assert flaky.main(["--fail-runs", "1", "--exit-code", "137"]) == 137
    monkeypatch.setenv("FANOUT_ATTEMPT", "2")
    monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", "0")
    assert flaky.main(["--fail-runs", "1", "--exit-code", "137"]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--exit-code", "256"],
        ["--exit-code", "x"],
        ["--fail-attempts", "-1"],
        ["--sleep", "-2"],
        ["--sleep=inf"],
        ["--message"],
        ["Ada"],
    ],
)
def test_rejects_impossible_requests(job_module, argv):
    with pytest.raises(SystemExit) as exc:
        job_module("flaky").main(argv)
    assert exc.value.code == 2
