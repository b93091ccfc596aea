"""``python -m bench.shared_quota``: what the shared API-call budget (issue 14, point 5) costs per call.

One batch, run twice in this process against one emulator (simulated tasks) and one running local Prefect
server (``controller.prefect_server``): with this process's own limiters (``--local-quota``), and with the
Prefect global rate limits ``fanout:<project>:<region>:<kind>`` that every batch of a project shares. The
rates are set far above what the batch uses, so neither budget ever waits: what differs is the bookkeeping.

Counted: the API calls the controller sent (the emulator's request counts: Cloud Run and Logging, every one
charged to the budget), the HTTP requests this process sent to the Prefect API (httpx, which Prefect's client
uses and the Google clients do not), wall time, this process's CPU and the Prefect server's CPU. A warm-up run
first creates the limits and pays the imports, so neither measured run does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.emulator import PROJECT, REGION, emulator, reset_stats, stats
from bench.workload import JOB

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "shared_quota.json"
RUNNING_TASKS = 1000  # the emulator's cap: simulated tasks cost no process
HIGH_RATE = 1_000_000  # calls per minute: far above the batch's, so no limiter ever waits
CONFIGS = ("local", "shared")


class PrefectCalls:
    """Counts the HTTP requests this process sends to the Prefect API (sync and async httpx clients)."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.count = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        import httpx

        originals: dict[type[Any], Callable[..., Any]] = {
            httpx.Client: httpx.Client.send,
            httpx.AsyncClient: httpx.AsyncClient.send,
        }

        def sync_send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            self._seen(request)
            response: httpx.Response = originals[httpx.Client](client, request, **kwargs)
            return response

        async def async_send(client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            self._seen(request)
            response: httpx.Response = await originals[httpx.AsyncClient](client, request, **kwargs)
            return response

        httpx.Client.send = sync_send  # type: ignore[method-assign,assignment]
        httpx.AsyncClient.send = async_send  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            httpx.Client.send = originals[httpx.Client]  # type: ignore[method-assign]
            httpx.AsyncClient.send = originals[httpx.AsyncClient]  # type: ignore[method-assign]

    def _seen(self, request: Any) -> None:
        if str(request.url).startswith(self.api_url):
            with self._lock:
                self.count += 1


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spec(batch_id: str, items: int) -> dict[str, Any]:
    return {"batch_id": batch_id, "items": [{"key": f"i{i:05d}", "job": JOB, "args": [f"n{i}"]} for i in range(items)]}


def run_once(url: str, batch_id: str, items: int, *, shared: bool, report_dir: Path) -> dict[str, Any]:
    """One per-item batch through ``controller.flow.execute``; wall and CPU seconds and the report's status."""
    from controller.catalog import Catalog
    from controller.clients import Clients, Endpoints
    from controller.flow import Options, execute
    from controller.pace import PollPolicy
    from controller.plan import Mode
    from controller.quota import Rates
    from controller.spec import load_batch
    from controller.store import LocalStore

    catalog = Catalog.from_jobs_dir()
    options = Options(
        project=PROJECT,
        region=REGION,
        report_to=str(report_dir),
        concurrency=16,
        mode=Mode.PER_ITEM,
        rates=Rates(run=HIGH_RATE, write=HIGH_RATE, read=HIGH_RATE, logs=HIGH_RATE, shared=shared),
        poll=PollPolicy(fastest=0.5, slowest=5.0),
    )
    batch = load_batch(_spec(batch_id, items), catalog)
    clients = Clients(project=PROJECT, endpoints=Endpoints(cloud_run=url, logging=url))
    cpu, wall = time.process_time(), time.perf_counter()
    report, _ = execute(batch, catalog, options, clients=clients, store=LocalStore(report_dir), use_prefect_tasks=False)
    return {
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "status": str(report.status),
        "problems": report.problems,
    }


def measure(items: int, work: Path) -> dict[str, Any]:
    """The warm-up, then the local and the shared run of the same batch; their figures and the differences."""
    from controller import prefect_server

    server, _ = prefect_server.ensure(work / "prefect", idle_seconds=3600)
    os.environ["PREFECT_API_URL"] = server.api_url  # before Prefect is imported (by controller.flow)
    calls = PrefectCalls(server.api_url)
    runs: dict[str, dict[str, Any]] = {}
    try:
        with emulator(RUNNING_TASKS, simulate=True) as url, calls.counting():
            run_once(url, "quota-warmup", 5, shared=True, report_dir=work / "reports")
            for config in CONFIGS:
                reset_stats(url)
                before_calls, before_server = calls.count, _process_cpu(server.pid)
                result = run_once(url, f"quota-{config}", items, shared=config == "shared", report_dir=work / "reports")
                requests = stats(url)["requests"]
                runs[config] = {
                    **result,
                    "api_calls": sum(requests.values()),
                    "prefect_calls": calls.count - before_calls,
                    "prefect_server_cpu_seconds": _process_cpu(server.pid) - before_server,
                }
    finally:
        prefect_server.stop(work / "prefect")
    # The machine's load during the runs: on a shared machine the wall time per call is mostly waiting.
    return {"items": items, "load_average": os.getloadavg(), "runs": runs, "per_call": per_call(runs)}


def per_call(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """What the shared budget adds per API call it charges, against the local one."""
    local, shared = runs["local"], runs["shared"]
    api_calls = shared["api_calls"]
    return {
        "extra_prefect_calls": (shared["prefect_calls"] - local["prefect_calls"]) / api_calls,
        "extra_wall_ms": 1000 * (shared["wall_seconds"] - local["wall_seconds"]) / api_calls,
        "extra_cpu_ms": 1000 * (shared["cpu_seconds"] - local["cpu_seconds"]) / api_calls,
        "server_cpu_ms": 1000
        * (shared["prefect_server_cpu_seconds"] - local["prefect_server_cpu_seconds"])
        / api_calls,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['items']} items, per item, one emulator (simulated tasks), one local Prefect server; "
        f"load average {result['load_average'][0]:.1f}",
        f"{'budget':<8} {'API calls':>9} {'Prefect calls':>13} {'wall s':>7} {'CPU s':>6} {'server CPU s':>12}",
    ]
    for config, run in result["runs"].items():
        lines.append(
            f"{config:<8} {run['api_calls']:>9} {run['prefect_calls']:>13} {run['wall_seconds']:>7.2f} "
            f"{run['cpu_seconds']:>6.2f} {run['prefect_server_cpu_seconds']:>12.2f}"
        )
    per = result["per_call"]
    lines.append(
        f"per API call, shared vs local: {per['extra_prefect_calls']:.2f} Prefect calls, "
        f"{per['extra_wall_ms']:+.1f} ms wall, {per['extra_cpu_ms']:+.2f} ms controller CPU, "
        f"{per['server_cpu_ms']:+.2f} ms Prefect server CPU"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_quota", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200, help="items of the batch (default 200)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if "PREFECT_API_URL" in os.environ:
        parser.error("unset PREFECT_API_URL: the case starts its own Prefect server")
    with tempfile.TemporaryDirectory(prefix="fanout-quota-") as work:
        result = measure(args.items, Path(work))
    print(render(result))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}")
    return 0 if all(run["status"] == "succeeded" for run in result["runs"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
