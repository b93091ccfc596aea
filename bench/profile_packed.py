"""``python -m bench.profile_packed [--items N] [--memory]``: where a packed batch's per-item CPU and memory go.

The controller's per-item work happens before launch (validate, plan, manifests) and after the execution
ends (task details, item results, log tails, report, JSON, HTML); polling costs per poll, not per item.
This runs each of those stages on real data and reports CPU seconds per stage, and with ``--memory`` the
tracemalloc peak and retained size of each stage and the allocation sites holding the most at the end.

The execution is real (the emulator runs N tasks and serves them through ListTasks and entries:list) but
its tasks are ``sh`` one-liners rather than ``hello`` (which costs a Python start per task), so a
10,000-task profile takes a minute rather than eight; every 100th task fails with a line of output, as in
the benchmark.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.emulator import PROJECT, REGION, emulator
from bench.workload import batch_spec

FAST_TASK = [
    "sh",
    "-c",
    'if [ $((CLOUD_RUN_TASK_INDEX % 100)) -eq 99 ]; then echo "item $CLOUD_RUN_TASK_INDEX failed"; exit 2; fi',
]


def _fast_execution(clients: Any, items: int) -> str:
    """A finished execution of ``items`` quick tasks; returns its name."""
    from google.cloud import run_v2

    parent = f"projects/{PROJECT}/locations/{REGION}"
    container = run_v2.Container(image="local/sh", command=FAST_TASK)
    job = run_v2.Job(
        template=run_v2.ExecutionTemplate(template=run_v2.TaskTemplate(containers=[container], max_retries=1))
    )
    clients.jobs.create_job(parent=parent, job=job, job_id="profile-sh").result()
    request = run_v2.RunJobRequest(
        name=f"{parent}/jobs/profile-sh", overrides=run_v2.RunJobRequest.Overrides(task_count=items)
    )
    operation = clients.jobs.run_job(request=request)
    name: str = operation.metadata.name
    while not clients.executions.get_execution(name=name).completion_time:
        time.sleep(0.5)
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_packed", description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--memory", action="store_true", help="tracemalloc per stage (slower)")
    args = parser.parse_args(argv)

    from controller.batch import BatchRunner
    from controller.batchfolder import store_report
    from controller.catalog import Catalog
    from controller.clients import Clients, Endpoints
    from controller.cloudrun import CloudRun
    from controller.plan import Mode, plan
    from controller.quota import Budget, Rates
    from controller.spec import load_batch
    from controller.store import LocalStore

    catalog = Catalog.from_jobs_dir()
    spec = batch_spec(args.items, "noop", "profile")
    rows: list[tuple[str, float, float, float]] = []
    if args.memory:
        tracemalloc.start()

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        if args.memory:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
        cpu = time.process_time()
        out = fn()
        cpu = time.process_time() - cpu
        peak = retained = 0.0
        if args.memory:
            current, top = tracemalloc.get_traced_memory()
            peak, retained = (top - before) / 2**20, (current - before) / 2**20
        rows.append((name, cpu, peak, retained))
        return out

    with emulator(100) as url, tempfile.TemporaryDirectory() as work:
        clients = Clients(project=PROJECT, endpoints=Endpoints(cloud_run=url, logging=url))
        execution = _fast_execution(clients, args.items)
        store = LocalStore(work)
        batch = stage("validate (load_batch)", lambda: load_batch(spec, catalog))
        the_plan = stage(
            "plan", lambda: plan(batch, catalog, mode=Mode.PACKED, manifest_root=store.url(batch.batch_id, "manifests"))
        )
        cloud = CloudRun(clients, PROJECT, REGION, Budget.from_rates(Rates.unlimited()))
        runner = BatchRunner(the_plan, cloud, store)
        stage("manifests (prepare)", runner.prepare)
        (state,) = runner.states
        state.execution = cloud.get_execution(execution)
        stage("task details (collect_tasks)", runner.collect_tasks)
        tails = stage("log tails", lambda: runner.log_tails(runner.iter_item_results(), clients.logging))
        report = stage("items made and written (shards)", lambda: runner.stored_report(runner.finished_items(tails)))
        stage("report.json", lambda: store_report(store, report))

        def html() -> None:
            from controller.html_report import render_html_chunks

            store.write(batch.batch_id, "report.html", render_html_chunks(report), content_type="text/html")

        stage("report.html", html)
        snapshot = tracemalloc.take_snapshot() if args.memory else None

    print(f"{args.items:,} items, packed; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"{'stage':<30} {'CPU s':>7} {'us/item':>8}" + (f" {'peak MiB':>9} {'kept MiB':>9}" if args.memory else ""))
    for name, cpu, peak, retained in rows:
        line = f"{name:<30} {cpu:7.2f} {cpu * 1e6 / args.items:8.0f}"
        print(line + (f" {peak:9.1f} {retained:9.1f}" if args.memory else ""))
    total = sum(row[1] for row in rows)
    print(f"{'total':<30} {total:7.2f} {total * 1e6 / args.items:8.0f}")
    if snapshot is not None:
        print("\nlargest holders at the end (tracemalloc, by line):")
        for stat in snapshot.statistics("lineno")[:10]:
            print(f"  {stat.size / 2**20:7.1f} MiB  {stat.count:>8} blocks  {stat.traceback[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
