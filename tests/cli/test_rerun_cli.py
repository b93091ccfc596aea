"""``fanout rerun`` and ``fanout run`` of a finished batch, as a user runs them (``main`` in this process,
against the emulator): what they print, their exit codes, and that bad input starts nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from cloudrun_emulator import Emulator
from controller.batchfolder import open_report
from controller.cli import main

pytestmark = [pytest.mark.usefixtures("prefect_server", "isolated")]

SECRET = "cli-s3cr3t-value"


def test_rerun_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["rerun", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--states", "--spec FILE", "--report-to", "every state but succeeded", "<batch>-rerun-<n>"):
        assert text in out, text


def test_run_again_and_rerun_from_the_command_line(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))  # the session's server, not another
    monkeypatch.setenv("COLUMNS", "400")  # summaries on lines of their own, whatever the paths' length
    batch_id = f"cli-{uuid.uuid4().hex[:8]}"
    items = [{"key": f"ok-{i}", "job": "hello", "args": [f"n{i}"]} for i in range(2)]
    items.append({"key": "bad", "job": "flaky", "args": ["--exit-code", "3"], "env": {"TOKEN": {"value": SECRET}}})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"batch_id": batch_id, "items": items}))
    reports = tmp_path / "reports"
    common = ["--emulator", emulator.url, "--project", emulator.project, "--poll-interval", "0.3", "--quiet"]

    assert main(["run", str(spec), "--report-to", str(reports), *common]) == 1
    url = reports / batch_id / "report.json"
    assert url.is_file(), capsys.readouterr().err

    # Run again: nothing launched, said at once and plainly.
    assert main(["run", str(spec), "--report-to", str(reports), *common]) == 1
    when = open_report(str(url)).report.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    printed = capsys.readouterr().out.splitlines()
    out = printed[printed.index(next(line for line in printed if line.startswith(f"batch {batch_id}"))) :]
    assert out[0] == (
        f"batch {batch_id} already finished at {when} (1 of 3 items did not succeed): nothing was launched."
    )
    assert out[1] == f"report: {url}"
    assert out[2].startswith(f"to run it anew:        fanout run {spec} --batch-id b-")
    assert out[3] == f"to rerun its failures: fanout rerun {url}"
    assert len(out) == 4  # and no summary: the flow did not run

    # Bad input: exit 2 with the place named, nothing started.
    bad = tmp_path / "elsewhere" / "not-a-report"
    bad.mkdir(parents=True)
    (bad / "report.json").write_text('{"batch_id": "not-a-report"}')
    for argv, message in [
        (["rerun", str(reports / batch_id), "--states", "bogus"], "fanout: --states: unknown state 'bogus'; the"),
        (["rerun", str(tmp_path / "missing")], f"fanout: {tmp_path / 'missing'}: no such report"),
        (["rerun", str(bad)], f"fanout: {bad / 'report.json'} is not a fanout report: "),
        (["rerun", str(url)], "need literal secret values that were never stored (bad: TOKEN); give the batch's spec"),
        # Refused once listed in the parent's report (the id is the parent's own): taken off the list again.
        (["rerun", str(url), "--states", "succeeded", "--batch-id", batch_id], "was already used for a different spec"),
    ]:
        assert main([*argv, *common]) == 2, argv
        captured = capsys.readouterr()
        assert message in captured.err, captured.err
        assert "Traceback" not in captured.err and SECRET not in captured.err + captured.out
    assert not (reports / f"{batch_id}-rerun-1").exists()
    assert open_report(str(url)).report.reruns == []
    assert b'id="lineage"' not in (reports / batch_id / "report.html").read_bytes()

    # Nothing to rerun: a plain message, exit 0.
    assert main(["rerun", str(url), "--states", "cancelled", *common]) == 0
    assert capsys.readouterr().out.startswith(f"fanout: nothing to rerun: no item of batch {batch_id} is cancelled")

    # --states picks the items: the succeeded ones need no secret, so no --spec.
    assert main(["rerun", str(reports / batch_id), "--states", "succeeded", *common]) == 0
    child = open_report(str(reports / f"{batch_id}-rerun-1")).report
    assert [item.key for item in child.items] == ["ok-0", "ok-1"]
    assert child.rerun_of is not None and child.rerun_of.report == str(url)
    assert [r.batch_id for r in open_report(str(url)).report.reruns] == [f"{batch_id}-rerun-1"]
    child_url = reports / f"{batch_id}-rerun-1" / "report.json"
    printed = capsys.readouterr().out.splitlines()
    assert f"report: {child_url}" in printed
    # Both ends of the link are shown: in the rerun's summary, and by ``fanout report show`` of either report.
    assert f"rerun of {batch_id} (report: {url})" in printed
    assert main(["report", "show", str(child_url)]) == 0
    assert f"rerun of {batch_id} (report: {url})" in capsys.readouterr().out.splitlines()
    assert main(["report", "show", str(reports / batch_id)]) == 0
    assert f"rerun as {batch_id}-rerun-1 (report: {child_url})" in capsys.readouterr().out.splitlines()
    page = (reports / batch_id / "report.html").read_bytes()
    assert f"rerun as {batch_id}-rerun-1 (report: {child_url})".encode() in page


def test_rerun_refuses_a_batch_still_running_or_an_interim_report(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from prefect.settings import PREFECT_API_URL

    from controller.outcomes import INTERIM_PROBLEM
    from controller.ownership import Owner, acquire
    from controller.store import LocalStore

    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    batch_id = f"cli-live-{uuid.uuid4().hex[:8]}"
    items = [{"key": "ok", "job": "hello", "args": ["n"]}, {"key": "bad", "job": "flaky", "args": ["--exit-code", "3"]}]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"batch_id": batch_id, "items": items}))
    reports = tmp_path / "reports"
    common = ["--emulator", emulator.url, "--project", emulator.project, "--poll-interval", "0.3", "--quiet"]
    assert main(["run", str(spec), "--report-to", str(reports), *common]) == 1
    url = reports / batch_id / "report.json"
    final = open_report(str(url)).report
    digest = final.spec_digest
    capsys.readouterr()

    # Its spec is run again (resumed) by a live controller: the report is not final while that runs.
    store = LocalStore(reports)
    now = lambda: datetime.now(UTC)  # noqa: E731
    lease, resumed = acquire(store, batch_id, spec_digest=digest, fields={}, owner=Owner.this_process(), now=now)
    assert resumed
    try:
        assert main(["rerun", str(url), *common]) == 2
        err = capsys.readouterr().err
        assert f"batch {batch_id!r} is being run by another controller (host" in err, err
        assert "rerun it once that run has ended" in err and "Traceback" not in err
    finally:
        lease.release()

    # An interim report (its controller was killed while it cancelled the batch): resume first.
    interim = final.model_copy(update={"problems": [INTERIM_PROBLEM]})
    url.write_bytes(interim.header_json())
    assert main(["rerun", str(url), *common]) == 2
    err = capsys.readouterr().err
    assert "is an interim report" in err and f"--batch-id {batch_id} and the same --report-to" in err, err
    assert not (reports / f"{batch_id}-rerun-1").exists()
    assert open_report(str(url)).report.reruns == []
