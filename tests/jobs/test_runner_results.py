"""The runner gives each program ``FANOUT_RESULT_FILE`` and stores what it wrote, create-only: in a local
folder by a linked copy, on fake-gcs-server through the JSON API with ``ifGenerationMatch=0``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from test_fanout_runner import ITEMS, run, write_manifest

# Writes its argv and ITEM as its result (and prints a line, as a program's output stays its own).
WRITER = [
    sys.executable,
    "-c",
    "import json, os, sys; print('working'); "
    "open(os.environ['FANOUT_RESULT_FILE'], 'w').write(json.dumps({'argv': sys.argv[1:], 'item': os.environ['ITEM']}))",
]


def packed(tmp_path: Path, index: int, results: str) -> dict[str, str]:
    write_manifest(tmp_path / "m", ITEMS, size=3)
    return {
        "FANOUT_MANIFEST": str(tmp_path / "m"),
        "FANOUT_MANIFEST_CHUNK": "3",
        "CLOUD_RUN_TASK_INDEX": str(index),
        "FANOUT_RESULTS_URI": results,
    }


def test_a_packed_tasks_result_lands_under_its_items_key_once(tmp_path: Path) -> None:
    env = packed(tmp_path, 4, str(tmp_path / "results"))

    first = run(env, WRITER)

    assert first.returncode == 0, first.stderr
    assert first.stdout == "working\n"
    stored = tmp_path / "results" / "k4" / "0.json"
    assert json.loads(stored.read_text()) == {"argv": ["--n=4", "two words"], "item": "item-4"}
    assert sorted(p.name for p in (tmp_path / "results" / "k4").iterdir()) == ["0.json"]  # no staging left
    stored.write_text('"first"')
    again = run(env, WRITER)  # the same task run twice: the first result stays
    assert again.returncode == 0
    assert "exists already; kept" in again.stderr
    assert stored.read_text() == '"first"'


def test_an_item_launched_alone_writes_under_its_task_index(tmp_path: Path) -> None:
    env = {"FANOUT_RESULTS_URI": str(tmp_path / "r"), "FANOUT_ITEM_KEY": "a/b", "CLOUD_RUN_TASK_INDEX": "2"}

    result = run({**env, "ITEM": "x"}, [*WRITER, "arg"])

    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r" / "a" / "b" / "2.json").read_text()) == {"argv": ["arg"], "item": "x"}


@pytest.mark.parametrize(
    ("program", "code"),
    [
        ("open(os.environ['FANOUT_RESULT_FILE'], 'w').write('1'); raise SystemExit(3)", 3),  # failed attempt
        ("pass", 0),  # wrote nothing
        ("open(os.environ['FANOUT_RESULT_FILE'], 'w')", 0),  # wrote an empty file
    ],
)
def test_nothing_is_stored_for_a_failed_attempt_or_an_empty_file(tmp_path: Path, program: str, code: int) -> None:
    env = {"FANOUT_RESULTS_URI": str(tmp_path / "r"), "FANOUT_ITEM_KEY": "k"}
    result = run(env, [sys.executable, "-c", f"import os; {program}"])
    assert result.returncode == code
    assert not (tmp_path / "r").exists()


def test_a_missing_program_still_exits_127_when_a_result_is_asked(tmp_path: Path) -> None:
    result = run({"FANOUT_RESULTS_URI": str(tmp_path), "FANOUT_ITEM_KEY": "k"}, ["/nonexistent/program"])
    assert result.returncode == 127
    assert "not found" in result.stderr


def test_sigterm_reaches_the_program(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    program = (
        "import pathlib, signal, sys, time; "
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "CLOUD_RUN_"))}
    runner = Path(__file__).resolve().parents[2] / "jobs" / "runner" / "fanout_runner.py"
    env = {**clean, "FANOUT_RESULTS_URI": str(tmp_path / "r"), "FANOUT_ITEM_KEY": "k"}
    with subprocess.Popen([sys.executable, str(runner), sys.executable, "-c", program], env=env) as proc:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline, "the program never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 7


def test_a_signal_as_the_program_ends_is_never_a_traceback(tmp_path: Path) -> None:
    """SIGTERM after SIGTERM while the program ends, as a container's stop can meet its task's end: a
    signal handled after the program was reaped once made the runner raise ProcessLookupError (and could
    have signalled whatever process had its pid by then). The program ignores SIGTERM, so it ends by itself."""
    marker = tmp_path / "started"
    program = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(0.02)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "CLOUD_RUN_"))}
    runner = Path(__file__).resolve().parents[2] / "jobs" / "runner" / "fanout_runner.py"
    env = {**clean, "FANOUT_RESULTS_URI": str(tmp_path / "r"), "FANOUT_ITEM_KEY": "k"}
    for _ in range(20):
        marker.unlink(missing_ok=True)
        argv = [sys.executable, "-S", str(runner), sys.executable, "-S", "-c", program]
        with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) as proc:
            deadline = time.monotonic() + 20
            while not marker.exists():
                assert time.monotonic() < deadline and proc.poll() is None, "the program never started"
                time.sleep(0.001)
            while proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.0005)
            stderr = proc.communicate(timeout=20)[1]
        assert (proc.returncode, stderr) == (0, ""), "the runner ends as its program did"


def test_a_result_is_uploaded_create_only_to_gcs(fake_gcs: str, tmp_path: Path) -> None:
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=fake_gcs)
    )
    if not client.bucket("reports").exists():
        client.create_bucket("reports")
    env = {**packed(tmp_path, 2, "gs://reports/p/batch 1/results/"), "STORAGE_EMULATOR_HOST": fake_gcs}

    first = run(env, WRITER)

    assert first.returncode == 0, first.stderr
    blob = client.bucket("reports").get_blob("p/batch 1/results/k2/0.json")
    assert blob is not None and blob.content_type == "application/json"
    assert json.loads(blob.download_as_bytes()) == {"argv": ["--n=2", "two words"], "item": "item-2"}
    again = run(env, [sys.executable, "-c", "import os; open(os.environ['FANOUT_RESULT_FILE'], 'w').write('2')"])
    assert again.returncode == 0, again.stderr
    assert "exists already; kept" in again.stderr
    assert json.loads(client.bucket("reports").blob("p/batch 1/results/k2/0.json").download_as_bytes())["item"] == (
        "item-2"
    )
