"""Helpers of the reliability suite: an emulator in its own process, the official clients to inspect it, the
controller run in a separate process, and batch specs whose every item has a known outcome.

Everything that checks the outcome reads it back the way a user could: executions through google-cloud-run's
``run_v2`` clients, reports from the store, counters from the emulator's ``/_emulator/stats``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from testenv import report_document

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
FANOUT = str(Path(PY).with_name("fanout"))
PROJECT = "local-project"
REGION = "us-central1"
LAUNCH_KEY = "FANOUT_LAUNCH_KEY"


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- the emulator as a separate process ---------------------------------------------------------------


class EmulatorProcess:
    """``python -m cloudrun_emulator`` on a free port; state lives only in that process."""

    def __init__(
        self,
        workdir: Path,
        *,
        faults: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
        port: int = 0,
        project: str = PROJECT,
    ):
        self.workdir = workdir
        self.project = project
        self.faults = faults
        self.secrets = secrets or {}
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> EmulatorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [PY, "-m", "cloudrun_emulator", "--port", str(self.port), "--project", self.project]
        # Free gRPC ports: their default, --port + 1 and + 2, may be another process's.
        args += ["--grpc-port", "0", "--grpc-tls-port", "0"]
        args += ["--max-running-tasks", "64"]
        if self.faults is not None:
            path = self.workdir / "faults.json"
            path.write_text(json.dumps(self.faults))
            args += ["--faults", str(path)]
        for name, value in self.secrets.items():
            args += ["--secret", f"{name}={value}"]
        self.log = (self.workdir / "emulator.log").open("w")
        self.proc = subprocess.Popen(
            args, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:
            if match := re.search(r"serving (http://\S+)", line):
                self.url = match.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"the emulator did not start; see {self.workdir / 'emulator.log'}")
        return self

    def stats(self) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/_emulator/stats", timeout=10)
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats

    def api_calls(self) -> int:
        return sum(self.stats()["requests"].values())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def task_processes(batch_id: str) -> list[int]:
    """Pids of this machine's processes that run a task of the batch (their env carries its launch key)."""
    marker = f"{LAUNCH_KEY}={batch_id}/".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours
        if any(var.startswith(marker) for var in environ.split(b"\0")):
            pids.append(int(entry.name))
    return pids


# -- reading Cloud Run back through the official clients ------------------------------------------------


@dataclass
class Execution:
    name: str
    job: str
    key: str | None
    running: int
    done: bool
    cancelled: int
    succeeded: int = 0


class CloudRunView:
    """What Cloud Run shows, read with ``run_v2`` clients (REST transport, anonymous credentials)."""

    def __init__(self, url: str, project: str = PROJECT, region: str = REGION) -> None:
        kwargs: dict[str, Any] = {
            "credentials": AnonymousCredentials(),
            "transport": "rest",
            "client_options": ClientOptions(api_endpoint=url),
        }
        self.jobs = run_v2.JobsClient(**kwargs)
        self.executions = run_v2.ExecutionsClient(**kwargs)
        self.parent = f"projects/{project}/locations/{region}"

    def all_executions(self, batch_id: str | None = None) -> list[Execution]:
        """Every execution of every job (of one batch, by its launch keys' prefix)."""
        out = []
        for job in self.jobs.list_jobs(parent=self.parent):
            for ex in self.executions.list_executions(
                request=run_v2.ListExecutionsRequest(parent=job.name, page_size=1000)
            ):
                key = next((e.value for c in ex.template.containers for e in c.env if e.name == LAUNCH_KEY), None)
                if batch_id is not None and not (key or "").startswith(f"{batch_id}/"):
                    continue
                out.append(
                    Execution(
                        name=ex.name,
                        job=job.name.rsplit("/", 1)[-1],
                        key=key,
                        running=ex.running_count,
                        done=bool(ex.completion_time),
                        cancelled=ex.cancelled_count,
                        succeeded=ex.succeeded_count,
                    )
                )
        return out

    def by_key(self, batch_id: str) -> dict[str, list[Execution]]:
        found: dict[str, list[Execution]] = defaultdict(list)
        for ex in self.all_executions(batch_id):
            assert ex.key is not None
            found[ex.key].append(ex)
        return dict(found)

    def running(self, batch_id: str) -> list[Execution]:
        """Executions of the batch that have not finished."""
        return [ex for ex in self.all_executions(batch_id) if not ex.done]


# -- batch specs with known outcomes --------------------------------------------------------------------


@dataclass
class Expected:
    state: str
    exit_code: int | None


@dataclass
class TrialSpec:
    batch_id: str
    spec: dict[str, Any]
    expected: dict[str, Expected] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        path = folder / f"{self.batch_id}.json"
        path.write_text(json.dumps(self.spec, indent=1))
        return path


def mixed_spec(
    rng: random.Random,
    batch_id: str,
    *,
    hello: int = 10,
    flaky: int = 6,
    multi_task: int = 3,
    one_off: int = 5,
    min_sleep: float = 0.1,
    max_sleep: float = 1.5,
    keep_jobs: bool = True,
    hello_groups: int = 2,
) -> TrialSpec:
    """A batch mixing packed launches (hello, flaky), per-item catalog launches (task_count 2) and one-off
    runs (image + command), each item's outcome fixed by its arguments."""
    items: list[dict[str, Any]] = []
    expected: dict[str, Expected] = {}

    def sleep() -> str:
        return f"{rng.uniform(min_sleep, max_sleep):.2f}"

    for i in range(hello):
        # Items of one job with different timeouts go to different packed launches.
        key = f"hello-{i:04d}"
        items.append(
            {"key": key, "job": "hello", "timeout": f"{50 + i % hello_groups}s", "args": ["--sleep", sleep(), key]}
        )
        expected[key] = Expected("succeeded", 0)
    for i in range(flaky):
        key = f"flaky-{i:04d}"
        if i % 3 == 2:
            items.append(
                {"key": key, "job": "flaky", "timeout": "20s", "args": ["--sleep", sleep(), "--exit-code", "3"]}
            )
            expected[key] = Expected("failed", 3)
        else:
            # Fails its first attempt, and the job's one retry succeeds.
            items.append(
                {"key": key, "job": "flaky", "timeout": "20s", "args": ["--sleep", sleep(), "--fail-attempts", "1"]}
            )
            expected[key] = Expected("succeeded", 0)
    for i in range(multi_task):
        key = f"multi-{i:04d}"
        items.append({"key": key, "job": "hello", "task_count": 2, "args": ["--sleep", sleep(), key]})
        expected[key] = Expected("succeeded", 0)
    for i in range(one_off):
        key = f"oneoff-{i:04d}"
        code = 5 if i % 4 == 3 else 0
        # One command for all, so the items share one one-off job; what varies goes in the args.
        items.append(
            {
                "key": key,
                "image": "example.com/sh:1",
                "command": ["sh", "-c", 'sleep "$0"; echo done "$1"; exit "$2"'],
                "args": [sleep(), key, str(code)],
            }
        )
        expected[key] = Expected("succeeded" if code == 0 else "failed", code)
    rng.shuffle(items)
    return TrialSpec(batch_id, {"batch_id": batch_id, "keep_jobs": keep_jobs, "items": items}, expected)


# -- the controller as a separate process ---------------------------------------------------------------


def _controller_main(spec_path: str, url: str, report_dir: str, batch_id: str, out_path: str) -> None:
    """Body of a controller process: ``controller.flow.execute`` without Prefect tasks (the same code path as
    ``fanout run`` minus the Prefect engine), with the CLI's SIGTERM handling."""
    out = open(out_path, "w")  # noqa: SIM115 - lives as long as the process
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    os.environ["FANOUT_EMULATOR_HOST"] = url

    from controller.batch import PollPolicy
    from controller.catalog import Catalog
    from controller.cli import _interrupting_signals
    from controller.clients import Clients, Endpoints
    from controller.flow import Options, execute
    from controller.quota import Rates
    from controller.spec import load_batch
    from controller.store import open_store

    catalog = Catalog.from_jobs_dir()
    batch = load_batch(Path(spec_path), catalog, batch_id=batch_id)
    options = Options(
        project=PROJECT,
        region=REGION,
        report_to=report_dir,
        rates=Rates.unlimited(),
        poll=PollPolicy(fastest=0.25, slowest=1.0),
    )
    clients = Clients(project=PROJECT, endpoints=Endpoints.from_env())
    with _interrupting_signals([]):
        report, where = execute(
            batch, catalog, options, clients=clients, store=open_store(report_dir), use_prefect_tasks=False
        )
    print(f"report: {where} status {report.status}", flush=True)
    os._exit(0)


_CONTEXT: Any = None


def controller_context() -> Any:
    """A forkserver that has imported the controller once: each controller process is a fresh process
    forked from it, which saves the ~3 s of importing Prefect and the Google clients per run."""
    global _CONTEXT  # noqa: PLW0603
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["controller.flow", "controller.batch", "tests.reliability.harness"])
        _CONTEXT = ctx
    return _CONTEXT


def start_controller(spec_path: Path, url: str, report_dir: Path, batch_id: str, out_path: Path) -> Any:
    process = controller_context().Process(
        target=_controller_main, args=(str(spec_path), url, str(report_dir), batch_id, str(out_path)), daemon=False
    )
    process.start()
    return process


def fanout(args: Iterable[str], **kwargs: Any) -> subprocess.Popen[str]:
    """``fanout ...`` as a subprocess in its own session (so signals reach only it)."""
    env = {
        **os.environ,  # with conftest's PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
        "PYTHONUNBUFFERED": "1",
        **kwargs.pop("env", {}),
    }
    return subprocess.Popen(
        [FANOUT, *args],
        cwd=kwargs.pop("cwd", REPO),
        env=env,
        stdout=kwargs.pop("stdout", subprocess.PIPE),
        stderr=kwargs.pop("stderr", subprocess.PIPE),
        text=True,
        start_new_session=True,
        **kwargs,
    )


def load_report(report_dir: Path, batch_id: str) -> dict[str, Any]:
    return report_document(report_dir / batch_id)


def check_report(
    report: dict[str, Any], trial: TrialSpec, by_key: dict[str, list[Execution]], *, check_executions: bool = True
) -> list[str]:
    """Problems with a final report: a missing or extra item, a state other than the one the item's
    arguments promise, or an execution other than the one Cloud Run holds for the item's launch."""
    problems = []
    items = {item["key"]: item for item in report["items"]}
    if set(items) != set(trial.expected):
        problems.append(
            f"items missing {sorted(set(trial.expected) - set(items))} extra {sorted(set(items) - set(trial.expected))}"
        )
    executions = {ex.name for runs in by_key.values() for ex in runs}
    for key, want in trial.expected.items():
        item = items.get(key)
        if item is None:
            continue
        if item["state"] != want.state or item["exit_code"] != want.exit_code:
            problems.append(
                f"{key}: {item['state']}/{item['exit_code']} != {want.state}/{want.exit_code} ({item['reason']})"
            )
        if item["state"] == "not_launched":
            problems.append(f"{key}: not_launched ({item['reason']})")
        elif check_executions and item["execution"] not in executions:
            problems.append(f"{key}: execution {item['execution']} is not one Cloud Run shows for the batch")
    if report["summary"]["total"] != len(trial.expected):
        problems.append(f"summary counts {report['summary']['total']} items, the batch has {len(trial.expected)}")
    return problems
