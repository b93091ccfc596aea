"""Input the user can fix gets exit 2, the place and the rule, before any API call and with no traceback.

These run ``controller.cli.main`` in this process: every case is refused before the flow, the emulator or
any client starts, so there is nothing to wait for. A case that got past the checks would try to reach
``UNREACHABLE`` (nothing listens there) or start the embedded emulator, and fail differently.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from controller.cli import build_parser, main
from controller.options import RunOptions

SPEC = "examples/hello.yaml"
UNREACHABLE = "http://127.0.0.1:9"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for name in [n for n in os.environ if n.startswith("FANOUT_")]:
        monkeypatch.delenv(name)
    # A run that gets as far as choosing its Cloud Run sets it for its flow: undone after the test (an empty
    # value means unset), not left to the next test of this worker.
    monkeypatch.setenv("FANOUT_EMULATOR_HOST", "")


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``fanout argv``; assert exit 2 and return what it printed to stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exited:  # argparse's own refusals
        code = int(exited.code or 0)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    assert err.startswith(("fanout: ", "usage: fanout")), err
    return err


def test_bare_fanout_prints_help_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fanout")
    assert "run" in out
    assert "plan" in out


@pytest.mark.parametrize(
    ("name", "value"), [("FANOUT_CONCURRENCY", "abc"), ("FANOUT_MODE", "fast"), ("FANOUT_BATCH_ID", "../x")]
)
def test_help_works_whatever_the_environment_holds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    for command in ("run", "plan"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: fanout {command}")


def test_help_wraps_at_spaces_only(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    before_epilog = out.split("batch spec (YAML or JSON):")[0]
    assert max(len(line) for line in before_epilog.splitlines()) <= 80
    assert "us-central1" in before_epilog  # not "us-" at the end of one line and "central1" on the next
    assert "<report-to>/<batch-id>/report.json" in before_epilog


@pytest.mark.parametrize("batch_id", ["../../x", "/tmp/abs", "a b", "nightly\n", "UPPER", "x" * 41])
@pytest.mark.parametrize("command", ["run", "plan"])
def test_batch_id_option_follows_the_spec_rule(capsys: pytest.CaptureFixture[str], command: str, batch_id: str) -> None:
    err = refused(capsys, command, SPEC, "--batch-id", batch_id)
    assert "--batch-id: batch_id has 1-40 lowercase letters, digits or hyphens" in err


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [
        ("--concurrency", "9" * 5000, "a number of at most 32 characters"),
        ("--concurrency", "0", "between 1 and 1000, got 0"),
        ("--concurrency", "ten", "valid integer"),
        ("--poll-interval", "nan", "seconds between 0.05 and 600, got nan"),
        ("--poll-interval", "inf", "seconds between 0.05 and 600, got inf"),
        ("--poll-interval", "1e-9", "seconds between 0.05 and 600"),
        ("--deadline", "1e999s", "expected a duration"),
        ("--deadline", "9999999d", "between 1s and 30 days"),
        ("--rate", "run=ten", "'run=ten': give KIND=N"),
        ("--rate", "launch=5", "unknown kind 'launch'"),
        ("--mode", "fast", "'auto', 'packed' or 'per-item'"),
        ("--logs", "some", "'failed', 'all' or 'none'"),
    ],
)
def test_numbers_and_choices_are_checked_before_anything_runs(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, rule: str
) -> None:
    err = refused(capsys, "run", SPEC, "--emulator", UNREACHABLE, flag, value)
    assert err.startswith(f"fanout: {flag}: ")
    assert rule in err
    assert len(err) < 400  # a 5,000-digit value is not echoed back whole


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("FANOUT_CONCURRENCY", "lots", "valid integer"),
        ("FANOUT_CONCURRENCY", "-3", "between 1 and 1000"),
        ("FANOUT_MODE", "fastest", "'auto', 'packed' or 'per-item'"),
        ("FANOUT_BATCH_ID", "../../etc", "batch_id has 1-40"),
        ("FANOUT_LOCAL_QUOTA", "maybe", "valid boolean"),
    ],
)
def test_bad_environment_variables_name_themselves(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str, value: str, rule: str
) -> None:
    monkeypatch.setenv(name, value)
    err = refused(capsys, "run", SPEC, "--emulator", UNREACHABLE)
    assert f"fanout: {name}: " in err
    assert rule in err
    assert value in err


def test_a_flag_wins_over_a_bad_environment_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_MODE", "fastest")
    assert main(["plan", SPEC, "--mode", "per-item"]) == 0
    assert "25 items -> 25 executions" in capsys.readouterr().out


def test_every_problem_with_the_options_is_listed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_CONCURRENCY", "x")
    err = refused(capsys, "run", SPEC, "--poll-interval", "0", "--batch-id", "..")
    assert [line.split(":")[0] for line in err.splitlines()] == ["fanout"] * 3
    assert "FANOUT_CONCURRENCY" in err
    assert "--poll-interval" in err
    assert "--batch-id" in err


def test_report_to_a_file_or_an_unwritable_folder_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    err = refused(capsys, "run", SPEC, "--emulator", UNREACHABLE, "--report-to", str(a_file / "reports"))
    assert f"--report-to {a_file}/reports: {a_file} is not a folder" in err
    # /proc takes no new files, whoever runs the test (root included).
    err = refused(capsys, "run", SPEC, "--emulator", UNREACHABLE, "--report-to", "/proc/fanout-reports")
    assert "--report-to /proc/fanout-reports: /proc is not writable" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_report_to_a_read_only_folder_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    err = refused(capsys, "run", SPEC, "--emulator", UNREACHABLE, "--report-to", str(folder))
    assert f"{folder} is not writable (Permission denied)" in err


def test_gs_reports_on_the_embedded_emulator_say_how_to_fix_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    err = refused(capsys, "run", SPEC, "--report-to", "gs://bucket/reports")
    assert "the local emulator has no Cloud Storage" in err
    assert "STORAGE_EMULATOR_HOST" in err
    assert "--project" in err


def test_report_show_refuses_what_is_not_a_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"batch_id": "x", "items": [')
    assert "is not a fanout report" in refused(capsys, "report", "show", str(broken))
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    assert f"{other} is not a fanout report: " in refused(capsys, "report", "show", str(other))
    assert "/dev/zero is not a regular file" in refused(capsys, "report", "show", "/dev/zero")
    assert "missing.json: no such report" in refused(capsys, "report", "show", str(tmp_path / "missing.json"))
    err = refused(capsys, "report", "show", str(other), "--failed", "9" * 5000)
    assert "--failed: expected a whole number of at most 9 digits" in err
    assert len(err) < 400


def test_report_show_does_not_wait_on_a_fifo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)  # no writer: opening it to read would block for ever
    codes: list[int] = []
    reader = threading.Thread(target=lambda: codes.append(main(["report", "show", str(fifo)])), daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert codes == [2], "fanout report show blocked on a FIFO"
    err = capsys.readouterr().err
    assert f"fanout: {fifo} is not a regular file" in err


def test_a_fifo_as_spec_or_catalog_is_refused_whether_fed_or_not(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)  # no writer: opening it to read would block for ever
    spec = tmp_path / "one.yaml"
    spec.write_text("items:\n  - job: hello\n")
    codes: list[int] = []

    def plans() -> None:
        codes.append(main(["plan", str(fifo)]))
        codes.append(main(["plan", str(spec), "--catalog", str(fifo)]))
        codes.append(main(["plan", str(spec), "--catalog", "/dev/zero"]))  # its size says 0; it never ends

    reader = threading.Thread(target=plans, daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert codes == [2, 2, 2], "fanout plan blocked on a FIFO or read /dev/zero"
    err = capsys.readouterr().err
    assert f"cannot read the spec: {fifo} is not a regular file; give a YAML or JSON file" in err
    assert f"fanout: cannot read job catalog {fifo}: {fifo} is not a regular file" in err
    assert "fanout: cannot read job catalog /dev/zero: /dev/zero is not a regular file" in err


def test_plan_uses_words_for_counts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text("items:\n  - job: hello\n")
    assert main(["plan", str(one), "--mode", "per-item"]) == 0
    out = capsys.readouterr().out
    assert "1 item -> 1 execution" in out
    assert "(s)" not in out


def test_a_local_store_failure_names_the_file_and_why(tmp_path: Path) -> None:
    from controller.store import LocalStore, StoreError

    blocked = tmp_path / "reports"
    blocked.write_text("a file where the batch folder would go")
    with pytest.raises(StoreError) as caught:
        LocalStore(tmp_path).write("reports", "report.json", b"{}")
    assert str(caught.value).startswith(f"cannot write {blocked}/report.json: ")


def test_a_catalog_name_the_file_system_refuses_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "plan", SPEC, "--catalog", "9" * 5000)
    assert "File name too long" in err
    assert len(err) < 300


@pytest.mark.parametrize(("value", "shared"), [("1", False), ("true", False), ("0", True), ("", True)])
def test_fanout_local_quota_keeps_the_budget_in_the_process(value: str, shared: bool) -> None:
    args = build_parser().parse_args(["run", SPEC])
    assert RunOptions.from_cli(args, {"FANOUT_LOCAL_QUOTA": value}).budget().shared is shared
    assert RunOptions.from_cli(build_parser().parse_args(["run", SPEC, "--local-quota"]), {}).budget().shared is False
