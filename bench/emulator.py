"""The Cloud Run emulator as a separate process, one fresh instance per measured run.

A separate process keeps its CPU and memory out of the controller's measurements; a fresh instance per
run keeps runs independent (no executions or log entries left over from the previous one) and its request
counts exact.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROJECT = "bench-project"
REGION = "us-central1"
_SERVING = re.compile(r"serving (http://\S+)")
_START_SECONDS = 30.0


def _drain(stream: Any, sink: list[str]) -> None:
    # Keep reading so a chatty emulator never blocks on a full pipe; the tail helps explain a failure.
    for line in stream:
        sink.append(line)
        del sink[:-50]


@contextlib.contextmanager
def emulator(max_running_tasks: int, *, simulate: bool = False, grpc_port: int = 0) -> Iterator[str]:
    """Start ``python -m cloudrun_emulator`` on a free port; yields its URL; stops it (SIGTERM kills
    every task's process group). ``simulate``: no process starts (``--simulate-tasks``, scale cases only).
    ``grpc_port``: where its gRPC server listens (default a free port)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudrun_emulator",
            "--port",
            "0",
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--grpc-port",
            str(grpc_port),
            "--max-running-tasks",
            str(max_running_tasks),
            *(["--simulate-tasks"] if simulate else []),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        url = None
        timer = threading.Timer(_START_SECONDS, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                output.append(line)
                if found := _SERVING.search(line):
                    url = found.group(1)
                    break
        finally:
            timer.cancel()
        if url is None:
            raise RuntimeError("the emulator did not start:\n" + "".join(output[-20:]))
        threading.Thread(target=_drain, args=(proc.stdout, output), daemon=True).start()
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stats(url: str) -> dict[str, Any]:
    """``GET /_emulator/stats``: request counts per method and task counters."""
    with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=30) as response:
        data: dict[str, Any] = json.load(response)
    return data


def reset_stats(url: str) -> None:
    request = urllib.request.Request(f"{url}/_emulator/stats", method="DELETE")
    with urllib.request.urlopen(request, timeout=30):
        pass
