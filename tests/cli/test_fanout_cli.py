"""The `fanout` command as a user runs it: real processes, real exit codes, what they print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudrun_emulator import Emulator

REPO = Path(__file__).resolve().parents[2]
FANOUT = [sys.executable, "-m", "controller.cli"]


def fanout(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FANOUT, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    """No traceback and no complaints about telemetry or analytics on an offline machine."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for noise in ("telemetry", "analytics", "ConnectionError", "Errno -3", "Name or service not known"):
        assert noise.lower() not in output.lower(), noise


def test_help_teaches_the_spec_format() -> None:
    result = fanout("run", "--help")
    assert result.returncode == 0
    for text in ("batch_id:", "defaults:", "items:", "Secret Manager", "--mode", "--report-to", "Exit 0"):
        assert text in result.stdout


def test_plan_makes_no_api_call(emulator: Emulator) -> None:
    before = emulator.stats()
    result = fanout("plan", "examples/mixed.yaml", "--mode", "per-item", env={"FANOUT_EMULATOR_HOST": emulator.url})
    assert result.returncode == 0, result.stderr
    assert "7 items -> 7 executions" in result.stdout
    assert "nothing was launched (dry run)" in result.stdout
    assert emulator.stats() == before
    as_json = json.loads(fanout("plan", "examples/hello.yaml", "--json").stdout)
    assert as_json["items"] == 25
    assert [launch["packed"] for launch in as_json["launches"]] == [True]


def test_invalid_spec_lists_every_problem_and_exits_2(tmp_path: Path, emulator: Emulator) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "items:\n  - job: hello\n    env: {PORT: '1'}\n  - job: wordcont\n  - {job: hello, task_count: 0}\n"
    )
    before = emulator.stats()
    result = fanout("run", str(spec), "--emulator", emulator.url)
    assert result.returncode == 2
    assert "3 problems" in result.stderr
    assert "line 3: items[0].env.PORT: environment variable 'PORT' is reserved" in result.stderr
    assert "line 4: items[1].job: no job 'wordcont' in the catalog" in result.stderr
    assert "line 5: items[2].task_count" in result.stderr
    assert emulator.stats() == before
    assert_clean(result)
    missing = fanout("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "cannot read the spec" in missing.stderr


@pytest.mark.slow
def test_run_exit_codes_summary_and_report_show(tmp_path: Path, emulator: Emulator) -> None:
    reports = tmp_path / "reports"
    ok = fanout(
        "run", "examples/hello.yaml", "--emulator", emulator.url, "--project", emulator.project,
        "--report-to", str(reports), "--batch-id", "cli-ok", "--poll-interval", "0.3",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "all 25 items succeeded" in ok.stdout
    assert f"report: {reports}/cli-ok/report.json" in ok.stdout
    assert ok.stdout.endswith(f"\nopen: {reports}/cli-ok/report.html\n")  # last, what a person opens
    assert (reports / "cli-ok" / "report.html").is_file()
    assert "[fanout] 25/25 done" in ok.stderr  # plain progress lines when not on a terminal
    assert ok.stderr.count("Finished in state") == 1  # the flow run's; task runs' routine lines stay off
    assert "temporary server" not in ok.stderr  # nor the address of a server that is gone after the run
    assert_clean(ok)

    failed = fanout(
        "run", "examples/mixed.yaml", "--emulator", emulator.url, "--project", emulator.project,
        "--report-to", str(reports), "--batch-id", "cli-mixed", "--poll-interval", "0.3", "--quiet",
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    assert "3 of 7 items did not succeed" in failed.stdout
    assert "[fanout]" not in failed.stderr
    assert failed.stderr == ""  # --quiet: the summary on stdout, and errors (there were none)
    assert_clean(failed)

    shown = fanout("report", "show", str(reports / "cli-mixed"))
    assert shown.returncode == 0
    assert "3 of 7 items did not succeed" in shown.stdout
    assert "exits-3" in shown.stdout
    not_a_report = tmp_path / "x.json"
    not_a_report.write_text('{"hello": 1}')
    assert fanout("report", "show", str(not_a_report)).returncode == 2
