"""Stop early and results as they finish, measured on the emulator: ``python -m bench.stop_early [N]``.

Two cases, each on a fresh emulator process (``bench.emulator``), the controller in this process
(``controller.flow.execute`` without Prefect tasks, as ``bench/_controller.py`` runs it):

* **broken image**: N items of a packed job whose program fails at once (``flaky --exit-code 1``; the job
  retries each task once, as ``max_retries: 1`` says), at most 50 tasks running (so 50-task launches), run
  without ``max_failures`` and with ``max_failures: 10``. Rows: tasks and attempts the emulator started,
  the batch's estimated cost (its report's), wall time, and the ratios.
* **time to first result**: 20 packed items sleeping 0.5 s to 10 s (``hello --sleep``), streamed through
  the runner's result sink as ``controller.stream`` uses it: when the first result came against the batch's
  wall time (spec to report).

Prints a Markdown table and writes ``bench/results/stop_early.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.emulator import PROJECT, REGION, emulator, stats

CAP = 50
RESULTS = Path(__file__).resolve().parent / "results" / "stop_early.json"


def _run(url: str, spec: dict[str, Any], *, on_result: Any = None) -> tuple[Any, float]:
    from controller.catalog import Catalog
    from controller.clients import Clients, Endpoints
    from controller.flow import Options, execute, result_sink
    from controller.pace import PollPolicy
    from controller.plan import Mode
    from controller.spec import load_batch
    from controller.store import open_store

    catalog = Catalog.from_jobs_dir()
    batch = load_batch(spec, catalog)
    with tempfile.TemporaryDirectory() as reports:
        options = Options(
            project=PROJECT,
            region=REGION,
            report_to=reports,
            mode=Mode.PACKED,
            max_running_tasks=CAP,
            poll=PollPolicy(fastest=0.25, slowest=2.0),
            logs_for="none",
        )
        clients = Clients(project=PROJECT, endpoints=Endpoints(cloud_run=url, logging=url, storage=None))
        token = result_sink.set(on_result)
        start = time.perf_counter()
        try:
            report, _ = execute(
                batch, catalog, options, clients=clients, store=open_store(reports), use_prefect_tasks=False
            )
        finally:
            result_sink.reset(token)
        return report, time.perf_counter() - start


def broken_image(items: int, max_failures: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "items": [{"key": f"b{n:05d}", "job": "flaky", "args": ["--exit-code", "1"]} for n in range(items)]
    }
    if max_failures is not None:
        spec["max_failures"] = max_failures
    with emulator(CAP) as url:
        report, wall = _run(url, spec)
        counters = stats(url)
    cost = report.summary.cost.cost_usd if report.summary.cost else 0.0
    return {
        "case": f"broken image, {items:,} items",
        "max_failures": max_failures,
        "tasks": counters["tasks_started"],
        "attempts": counters["attempts_started"],
        "launches": sum(1 for launch in report.launches if launch.execution),
        "cost_usd": cost,
        "wall_s": round(wall, 1),
        "stopped": report.stopped,
        "not_launched": report.summary.by_state.get("not_launched", 0),
    }


def first_result() -> dict[str, Any]:
    naps = [round(0.5 + 9.5 * n / 19, 2) for n in range(20)]
    items = [{"key": f"s{n:02d}", "job": "hello", "args": ["--sleep", str(nap)]} for n, nap in enumerate(naps)]
    spec = {"items": items}
    arrivals: list[float] = []
    with emulator(CAP) as url:
        start = time.perf_counter()
        report, wall = _run(url, spec, on_result=lambda _item: arrivals.append(time.perf_counter() - start))
    return {
        "case": "time to first result, 20 items sleeping 0.5-10 s",
        "first_result_s": round(arrivals[0], 1),
        "median_result_s": round(sorted(arrivals)[len(arrivals) // 2], 1),
        "wall_s": round(wall, 1),
        "first_vs_wall": round(arrivals[0] / wall, 2),
        "results": len(arrivals),
        "succeeded": report.summary.succeeded,
    }


def main(argv: list[str]) -> int:
    items = int(argv[0]) if argv else 500
    without = broken_image(items, None)
    stopped = broken_image(items, 10)
    stream = first_result()
    RESULTS.write_text(json.dumps({"broken_image": [without, stopped], "first_result": stream}, indent=1) + "\n")
    print("| case | max_failures | tasks started | attempts | launches | cost USD | wall s |")
    print("|---|---|---|---|---|---|---|")
    for row in (without, stopped):
        limit = row["max_failures"] if row["max_failures"] is not None else "none"
        print(
            f"| {row['case']} | {limit} | {row['tasks']:,} | {row['attempts']:,} | {row['launches']} | "
            f"{row['cost_usd']:.6f} | {row['wall_s']} |"
        )
    saved = 1 - stopped["tasks"] / max(1, without["tasks"])
    print(
        f"\nmax_failures 10: {stopped['tasks'] / max(1, without['tasks']):.3f}x the tasks ({saved:.1%} fewer), "
        f"{stopped['cost_usd'] / max(1e-12, without['cost_usd']):.3f}x the cost, "
        f"{stopped['wall_s'] / max(0.1, without['wall_s']):.2f}x the wall time"
    )
    print("\n| case | first result s | median result s | batch wall s | first / wall |")
    print("|---|---|---|---|---|")
    print(
        f"| {stream['case']} | {stream['first_result_s']} | {stream['median_result_s']} | {stream['wall_s']} | "
        f"{stream['first_vs_wall']} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
