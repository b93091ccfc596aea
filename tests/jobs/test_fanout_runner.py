"""The packed-execution runner: picks its item by task index from a local or gs:// manifest, then execs."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

RUNNER = Path(__file__).resolve().parents[2] / "jobs" / "runner" / "fanout_runner.py"
# Prints its argv and one env var as JSON, so a test sees exactly what the runner exec'd.
ECHO = [
    sys.executable,
    "-c",
    "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'item': os.environ.get('ITEM')}))",
]


def chunk(offset: int, items: list[dict[str, object]]) -> dict[str, object]:
    return {"schema": "fanout.manifest/v1", "offset": offset, "items": items}


def write_manifest(directory: Path, items: list[dict[str, object]], size: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(items), size):
        (directory / f"{start // size:05d}.json").write_text(json.dumps(chunk(start, items[start : start + size])))


def run(env: dict[str, str], argv: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "CLOUD_RUN_"))}
    clean.pop("STORAGE_EMULATOR_HOST", None)
    return subprocess.run(
        [sys.executable, str(RUNNER), *(ECHO if argv is None else argv)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


ITEMS = [{"key": f"k{i}", "args": [f"--n={i}", "two words"], "env": {"ITEM": f"item-{i}"}} for i in range(7)]


def test_without_a_manifest_the_program_runs_with_its_own_args():
    result = run({}, [*ECHO, "a", "b c"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"argv": ["a", "b c"], "item": None}


def test_the_programs_exit_code_is_the_tasks():
    result = run({}, [sys.executable, "-c", "raise SystemExit(42)"])
    assert result.returncode == 42


@pytest.mark.parametrize("index", [0, 2, 3, 6])
def test_each_task_runs_its_own_item_from_a_local_manifest(tmp_path, index):
    write_manifest(tmp_path / "m", ITEMS, size=3)

    result = run(
        {"FANOUT_MANIFEST": str(tmp_path / "m"), "FANOUT_MANIFEST_CHUNK": "3", "CLOUD_RUN_TASK_INDEX": str(index)}
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"argv": [f"--n={index}", "two words"], "item": f"item-{index}"}


def test_chunk_size_defaults_to_100(tmp_path):
    write_manifest(tmp_path / "m", ITEMS * 20, size=100)  # 140 items: chunks 00000 and 00001

    result = run({"FANOUT_MANIFEST": str(tmp_path / "m"), "CLOUD_RUN_TASK_INDEX": "101"})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["item"] == f"item-{101 % 7}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such manifest chunk"),
        ("{not json", "not JSON"),
        (json.dumps({"schema": "other/v1", "offset": 0, "items": []}), "not a fanout.manifest/v1 chunk"),
        (json.dumps(chunk(0, [{"key": "a"}])), "task 1 is not in this chunk"),
        (json.dumps(chunk(0, [{}, {"key": "b", "args": "not-a-list"}])), "'args' must be a list of strings"),
        (json.dumps(chunk(0, [{}, {"key": "b", "env": {"A": 1}}])), "'env' must map names to strings"),
        (json.dumps(chunk("0", [{}, {}])), "'offset' must be an integer"),
    ],
)
def test_a_bad_manifest_exits_78_with_one_clear_line(tmp_path, content, message):
    directory = tmp_path / "m"
    directory.mkdir()
    if content is not None:
        (directory / "00000.json").write_text(content)

    result = run({"FANOUT_MANIFEST": str(directory), "CLOUD_RUN_TASK_INDEX": "1"})

    assert result.returncode == 78
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("fanout_runner: ")
    assert message in result.stderr


@pytest.mark.parametrize(("env", "code"), [({"CLOUD_RUN_TASK_INDEX": "x"}, 78), ({}, 78)])
def test_a_missing_or_bad_task_index_is_a_config_error(tmp_path, env, code):
    write_manifest(tmp_path / "m", ITEMS, size=3)
    assert run({"FANOUT_MANIFEST": str(tmp_path / "m"), **env}).returncode == code


def test_no_program_is_a_usage_error():
    result = run({}, [])
    assert result.returncode == 64
    assert "usage" in result.stderr


def test_a_missing_program_exits_127():
    assert run({}, ["/nonexistent/program"]).returncode == 127


@pytest.mark.parametrize("results", [False, True], ids=["exec", "with-results"])
def test_a_program_the_kernel_cannot_run_exits_126_with_one_line(tmp_path, results):
    program = tmp_path / "no-interpreter-line"
    program.write_bytes(b"\x00\x01 not a script, not a binary\n")
    program.chmod(0o755)
    env = {"FANOUT_RESULTS_URI": str(tmp_path / "r"), "FANOUT_ITEM_KEY": "k"} if results else {}
    result = run(env, [str(program)])
    assert (result.returncode, result.stderr) == (126, f"fanout_runner: {program}: cannot be run: Exec format error\n")


# --- gs:// manifests ------------------------------------------------------------------------------


def upload_manifest(host: str, bucket_name: str, prefix: str, items: list[dict[str, object]], size: int) -> None:
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=host)
    )
    bucket = client.bucket(bucket_name)
    if not bucket.exists():
        client.create_bucket(bucket_name)
    for start in range(0, len(items), size):
        bucket.blob(f"{prefix}/{start // size:05d}.json").upload_from_string(
            json.dumps(chunk(start, items[start : start + size])), content_type="application/json"
        )


@pytest.mark.parametrize("index", [0, 4, 6])
def test_reads_its_chunk_from_gcs_through_the_emulator(fake_gcs, index):
    # The object name has characters that must be URL-quoted to reach the right object.
    upload_manifest(fake_gcs, "reports", "fanout/manifests/batch 1/launch-0", ITEMS, size=4)

    result = run(
        {
            "STORAGE_EMULATOR_HOST": fake_gcs,
            "FANOUT_MANIFEST": "gs://reports/fanout/manifests/batch 1/launch-0/",
            "FANOUT_MANIFEST_CHUNK": "4",
            "CLOUD_RUN_TASK_INDEX": str(index),
        }
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"argv": [f"--n={index}", "two words"], "item": f"item-{index}"}


def test_a_missing_gcs_chunk_is_a_config_error(fake_gcs):
    upload_manifest(fake_gcs, "reports", "other", ITEMS, size=100)

    result = run(
        {
            "STORAGE_EMULATOR_HOST": fake_gcs,
            "FANOUT_MANIFEST": "gs://reports/missing",
            "CLOUD_RUN_TASK_INDEX": "0",
        }
    )

    assert result.returncode == 78
    assert "not found" in result.stderr


# --- retries and credentials, against small scripted HTTP servers ----------------------------------


@contextmanager
def scripted_server(responses: list[tuple[int, bytes]], seen: list[dict[str, str]]) -> Iterator[str]:
    """Answers each GET with the next scripted (status, body), recording the request headers."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            status, body = responses.pop(0) if responses else (500, b"script exhausted")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_transient_errors_are_retried_with_bounded_backoff(runner):
    body = json.dumps(chunk(0, ITEMS)).encode()
    seen: list[dict[str, str]] = []
    sleeps: list[float] = []
    with scripted_server([(503, b""), (429, b""), (200, body)], seen) as host:
        data = runner.read_chunk("gs://b/m/00000.json", {"STORAGE_EMULATOR_HOST": host}, sleep=sleeps.append)

    assert data == chunk(0, ITEMS)
    assert sleeps == [0.5, 1.0]
    assert [request["path"] for request in seen] == ["/storage/v1/b/b/o/m%2F00000.json?alt=media"] * 3


def test_gives_up_with_74_after_the_last_attempt(runner):
    sleeps: list[float] = []
    with scripted_server([(503, b"")] * 10, []) as host, pytest.raises(runner.ManifestError) as exc:
        runner.read_chunk("gs://b/m/00000.json", {"STORAGE_EMULATOR_HOST": host}, sleep=sleeps.append)

    assert exc.value.code == 74
    assert len(sleeps) == runner.READ_ATTEMPTS - 1
    assert sum(sleeps) < 10


def test_access_denied_is_not_retried_and_exits_77(runner):
    sleeps: list[float] = []
    with scripted_server([(403, b"")], []) as host, pytest.raises(runner.ManifestError) as exc:
        runner.read_chunk("gs://b/m/00000.json", {"STORAGE_EMULATOR_HOST": host}, sleep=sleeps.append)
    assert exc.value.code == 77
    assert sleeps == []


def test_token_comes_from_the_metadata_server_with_its_header(runner):
    seen: list[dict[str, str]] = []
    token = json.dumps({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"}).encode()
    with scripted_server([(200, token)], seen) as host:
        assert runner.metadata_token({"GCE_METADATA_HOST": host}) == "ya29.test"
    assert seen[0]["path"] == "/computeMetadata/v1/instance/service-accounts/default/token"
    assert seen[0]["metadata-flavor"] == "Google"


def test_chunk_location(runner):
    assert runner.chunk_location("gs://b/p/", 250, 100) == "gs://b/p/00002.json"
    assert runner.chunk_location("/tmp/m", 9999, 1) == "/tmp/m/09999.json"
