"""What a new user meets on the first day with `fanout`: where the command is, a plan of several specs, a plan
that names the one-off job the run creates, and a summary that ends with the page a person opens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testenv import report_document

REPO = Path(__file__).resolve().parents[2]
FANOUT = [sys.executable, "-m", "controller.cli"]


def fanout(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FANOUT_EMULATOR_HOST", "FANOUT_PROJECT")}
    return subprocess.run(
        [*FANOUT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_make_run_and_the_readme_say_how_to_put_fanout_on_path() -> None:
    recipe = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "source .venv/bin/activate to have it on PATH" in recipe
    using = (REPO / "README.md").read_text().split("## Using it", 1)[1][:600]
    assert "source .venv/bin/activate" in using


def test_plan_takes_several_specs_and_reports_every_bad_one() -> None:
    both = fanout("plan", "examples/hello.yaml", "examples/mixed.yaml")
    assert both.returncode == 0, both.stderr
    assert both.stdout.count("nothing was launched (dry run)") == 2
    assert "batch mixed-example: 7 items" in both.stdout
    as_json = json.loads(fanout("plan", "examples/hello.yaml", "examples/mixed.yaml", "--json").stdout)
    assert [body["items"] for body in as_json] == [25, 7]

    bad = fanout("plan", "examples/hello.yaml", "missing-a.yaml", "missing-b.yaml")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "fanout: missing-a.yaml: invalid batch spec" in bad.stderr
    assert "fanout: missing-b.yaml: invalid batch spec" in bad.stderr


@pytest.mark.slow
def test_plan_names_the_one_off_job_the_run_creates_and_the_summary_ends_with_report_html(tmp_path: Path) -> None:
    """On the embedded emulator (no project, no emulator given), as `fanout run examples/mixed.yaml` is."""
    spec = tmp_path / "oneoff.yaml"
    spec.write_text(
        json.dumps(
            {
                "batch_id": "first-day-oneoff",
                "items": [{"key": "once", "image": "python:3.12-slim", "command": ["python3", "-c", "print(1)"]}],
            }
        )
    )
    reports = tmp_path / "reports"
    planned = fanout("plan", str(spec), "--report-to", str(reports), "--json")
    assert planned.returncode == 0, planned.stderr
    [job] = json.loads(planned.stdout)["one_off_jobs"]
    assert "the run's may differ" not in fanout("plan", str(spec), "--report-to", str(reports)).stdout

    ran = fanout("run", str(spec), "--report-to", str(reports))
    assert ran.returncode == 0, ran.stderr[-3000:]
    [item] = report_document(reports / "first-day-oneoff")["items"]
    assert f"/jobs/{job}/executions/" in item["execution"], (job, item["execution"])
    lines = ran.stdout.splitlines()
    assert lines[-2:] == [
        f"report: {reports / 'first-day-oneoff' / 'report.json'}",
        f"open: {reports / 'first-day-oneoff' / 'report.html'}",
    ]


def test_a_plan_that_cannot_know_the_one_off_job_name_says_so(tmp_path: Path) -> None:
    spec = tmp_path / "oneoff.yaml"
    spec.write_text(json.dumps({"items": [{"image": "python:3.12-slim", "command": ["python3", "-c", "print(1)"]}]}))
    planned = fanout("plan", str(spec), "--report-to", "gs://bucket/fanout")
    assert planned.returncode == 0, planned.stderr
    assert "looked up when the run starts: the run's may differ" in planned.stdout


@pytest.mark.slow
def test_limits_are_shown_and_set_in_calls_per_minute() -> None:
    """The UI's Concurrency page shows a limit and a slot decay; `fanout limits` reads and sets them as the
    quotas are stated. On the test run's local server (the first command may start it)."""
    from controller.quota import calls_per_minute, limit_shape

    assert all(calls_per_minute(*limit_shape(n)) == n for n in (1, 7, 60, 180, 600, 1000, 999_999))
    name = "fanout:first-day-limits:us-central1:run"
    done = fanout("limits", "set", name, "600")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == f"{name}: 600 calls per minute (Prefect: limit 100, decay 8.33333/s)\n"
    assert f"{name}: 600 calls per minute" in fanout("limits").stdout
    assert fanout("limits", "set", name, "180").returncode == 0
    assert f"{name}: 180 calls per minute (Prefect: limit 30, decay 2.5/s)" in fanout("limits", "show").stdout
    refused = fanout("limits", "set", "my-limit", "5")
    assert refused.returncode == 2 and "is not a fanout budget" in refused.stderr


def test_report_list_shows_the_batches_of_a_report_folder_newest_first(tmp_path: Path) -> None:
    from datetime import timedelta

    from bench.synthetic_report import build_report
    from controller.batchfolder import store_report
    from controller.report import ItemState
    from controller.store import LocalStore

    older = build_report(20, seed=1).model_copy(update={"batch_id": "older"})
    newer = build_report(5, states=[ItemState.SUCCEEDED]).model_copy(
        update={"batch_id": "newer", "finished_at": older.finished_at + timedelta(hours=1)}
    )
    for report in (older, newer):  # as a run writes them: report.json, its summary, beside its item shards
        store_report(LocalStore(tmp_path), report)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "report.json").write_text("{}")

    listed = fanout("report", "list", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["batch", "status", "items", "not", "ok", "finished", "(UTC)", "report"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["newer", "succeeded", "5", "0"],
        ["older", str(older.status), "20", str(older.summary.not_succeeded)],
    ]
    assert lines[1].endswith(str(tmp_path / "newer" / "report.json"))
    assert f"{tmp_path / 'stray' / 'report.json'} is not a fanout report; skipped" in listed.stderr
    missing = fanout("report", "list", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr


def test_on_a_terminal_plan_and_help_wrap_at_spaces_and_never_cut_a_word(tmp_path: Path) -> None:
    """A terminal 60 columns wide: lines fit it, broken only between words (a URL or a word longer than
    the line stays whole on a line of its own)."""
    import pty

    def on_terminal(*args: str) -> list[str]:
        controller, terminal = pty.openpty()
        env = {**os.environ, "COLUMNS": "60", "LINES": "40"}
        with subprocess.Popen([*FANOUT, *args], cwd=REPO, env=env, stdout=terminal, stderr=subprocess.DEVNULL) as proc:
            os.close(terminal)
            chunks = []
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal's other end closed: the command is done
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            proc.wait(timeout=120)
        os.close(controller)
        return b"".join(chunks).decode().replace("\r\n", "\n").splitlines()

    for args in (("plan", "examples/mixed.yaml"), ()):
        lines = on_terminal(*args)
        assert lines, args
        words = {word for line in lines for word in line.split()}
        for line in lines:
            assert len(line) <= 60 or " " not in line.strip(), (args, line)
        if args:
            assert "6,244.0" in " ".join(lines) and "2026-11-30)" in words  # nothing cut in two
