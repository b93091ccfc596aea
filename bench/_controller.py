"""One measured run, in its own process: ``python -m bench._controller REQUEST.json RESULT.json``.

A child process per run keeps the controller's CPU time and peak RSS its own (the emulator and the task
processes live elsewhere), and gives every run a fresh interpreter. The clock starts after imports and the
catalog load, which every mode pays once whatever the batch size; what is timed is the batch from spec to
report.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _endpoint_clients(url: str) -> tuple[Any, Any]:
    """The official JobsClient and ExecutionsClient pointed at the emulator, as the emulator docs show."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2

    options = ClientOptions(api_endpoint=url)
    jobs = run_v2.JobsClient(credentials=AnonymousCredentials(), transport="rest", client_options=options)
    executions = run_v2.ExecutionsClient(credentials=AnonymousCredentials(), transport="rest", client_options=options)
    return jobs, executions


def run_naive(request: dict[str, Any]) -> dict[str, Any]:
    """(a) What a user writes by hand: one RunJob per item, then ``operation.result()``, one after another."""
    from google.api_core import exceptions as gexc
    from google.cloud import run_v2

    jobs, _ = _endpoint_clients(request["url"])
    job = f"projects/{request['project']}/locations/{request['region']}/jobs/{request['job']}"
    items = request["spec"]["items"]
    start_cpu, start_rss, start = _cpu_seconds(), _maxrss_bytes(), time.perf_counter()
    succeeded = failed = 0
    for item in items:
        override = run_v2.RunJobRequest.Overrides.ContainerOverride(args=item["args"])
        overrides = run_v2.RunJobRequest.Overrides(container_overrides=[override])
        operation = jobs.run_job(request=run_v2.RunJobRequest(name=job, overrides=overrides))
        try:
            operation.result()
            succeeded += 1
        except gexc.GoogleAPICallError:
            failed += 1
    return _measured(start, start_cpu, start_rss, {"succeeded": succeeded, "failed": failed, "log_tails": 0})


def run_threads(request: dict[str, Any]) -> dict[str, Any]:
    """(a') The strongest simple peer: what a careful user writes with the official client, a pool of
    threads each sending RunJob with the item's overrides and waiting on ``operation.result()``."""
    from concurrent.futures import ThreadPoolExecutor

    from google.api_core import exceptions as gexc
    from google.cloud import run_v2

    jobs, _ = _endpoint_clients(request["url"])
    job = f"projects/{request['project']}/locations/{request['region']}/jobs/{request['job']}"

    def run(item: dict[str, Any]) -> bool:
        override = run_v2.RunJobRequest.Overrides.ContainerOverride(args=item["args"])
        overrides = run_v2.RunJobRequest.Overrides(container_overrides=[override])
        operation = jobs.run_job(request=run_v2.RunJobRequest(name=job, overrides=overrides))
        try:
            operation.result(timeout=request.get("item_timeout", 3600))
        except gexc.GoogleAPICallError:
            return False
        return True

    start_cpu, start_rss, start = _cpu_seconds(), _maxrss_bytes(), time.perf_counter()
    with ThreadPoolExecutor(request["threads"]) as pool:
        outcomes = list(pool.map(run, request["spec"]["items"]))
    succeeded = sum(outcomes)
    return _measured(
        start, start_cpu, start_rss, {"succeeded": succeeded, "failed": len(outcomes) - succeeded, "log_tails": 0}
    )


def run_floor(request: dict[str, Any]) -> dict[str, Any]:
    """The emulator alone: the batch's tasks as one packed execution, started with the official client and
    watched with a tight GetExecution loop. The floor is the execution's own span (createTime to
    completionTime, the emulator's clock), so no client cost is in it."""
    from google.cloud import run_v2

    from controller.catalog import Catalog
    from controller.plan import Mode, manifest_chunks, plan
    from controller.spec import load_batch
    from controller.store import LocalStore

    # Setup, not timed: the same manifest the controller would write, so each task does the same work.
    catalog = Catalog.from_jobs_dir()
    store = LocalStore(request["report_dir"])
    batch = load_batch(request["spec"], catalog)
    the_plan = plan(batch, catalog, mode=Mode.PACKED, manifest_root=store.url(batch.batch_id, "manifests"))
    (launch,) = the_plan.launches  # at most 10,000 items: one execution
    store.write_many(batch.batch_id, [(f"manifests/00000/{name}", data) for name, data in manifest_chunks(launch)])
    jobs, executions = _endpoint_clients(request["url"])
    override = run_v2.RunJobRequest.Overrides.ContainerOverride(
        clear_args=True, env=[run_v2.EnvVar(name=name, value=value) for name, value in launch.env]
    )
    run_request = run_v2.RunJobRequest(
        name=f"projects/{request['project']}/locations/{request['region']}/jobs/{launch.job}",
        overrides=run_v2.RunJobRequest.Overrides(container_overrides=[override], task_count=launch.task_count),
    )
    start_cpu, start_rss, start = _cpu_seconds(), _maxrss_bytes(), time.perf_counter()
    execution = jobs.run_job(request=run_request).metadata
    while not execution.completion_time:
        time.sleep(0.2)
        execution = executions.get_execution(name=execution.name)
    span = (execution.completion_time - execution.create_time).total_seconds()
    result = _measured(
        start,
        start_cpu,
        start_rss,
        {"succeeded": execution.succeeded_count, "failed": execution.failed_count, "log_tails": 0},
    )
    # The floor's wall time is the emulator's own span; the client's (which includes up to one 0.2 s poll
    # interval) is kept alongside.
    return {**result, "client_wall_seconds": result["wall_seconds"], "wall_seconds": span, "floor_seconds": span}


def run_controller(request: dict[str, Any]) -> dict[str, Any]:
    """(b) and (c): the product path, ``controller.flow.execute`` without Prefect task runs."""
    from controller.batch import PollPolicy
    from controller.catalog import Catalog
    from controller.clients import Clients, Endpoints
    from controller.flow import Options, execute
    from controller.plan import Mode
    from controller.quota import Rates
    from controller.report import ItemState
    from controller.spec import load_batch
    from controller.store import LocalStore

    catalog = Catalog.from_jobs_dir()
    poll = PollPolicy(**request["poll"]) if request.get("poll") else PollPolicy()
    options = Options(
        project=request["project"],
        region=request["region"],
        report_to=request["report_dir"],
        concurrency=request["concurrency"],
        mode=Mode(request["controller_mode"]),
        # The emulator has no quota; Rates() would only add waits the emulator does not ask for. The
        # benchmark reports the wall time the default quotas would impose on the same call counts instead.
        rates=Rates.unlimited(),
        poll=poll,
    )
    url = request["url"]
    if not request.get("field_masks", True):
        # The masks on/off row (bench.scale): the flow's CloudRun, built without response field masks.
        import functools

        import controller.flow
        from controller.cloudrun import CloudRun

        controller.flow.CloudRun = functools.partial(CloudRun, field_masks=False)  # type: ignore[assignment,attr-defined]
    start_cpu, start_rss, start = _cpu_seconds(), _maxrss_bytes(), time.perf_counter()
    # Popped: the CLI holds the parsed spec only until it is validated, and so does this run.
    batch = load_batch(request.pop("spec"), catalog)
    clients = Clients(project=request["project"], endpoints=Endpoints(cloud_run=url, logging=url))
    report, _ = execute(
        batch, catalog, options, clients=clients, store=LocalStore(request["report_dir"]), use_prefect_tasks=False
    )
    by_state = report.summary.by_state
    return _measured(
        start,
        start_cpu,
        start_rss,
        {
            "succeeded": by_state.get(ItemState.SUCCEEDED, 0),
            "failed": report.summary.total - by_state.get(ItemState.SUCCEEDED, 0),
            "log_tails": sum(1 for item in report.items if item.log_tail),
            "results": sum(1 for item in report.items if item.result is not None),
            "launches": len(report.launches),
            "problems": report.problems,
        },
    )


def _measured(start: float, start_cpu: float, start_rss: int, extra: dict[str, Any]) -> dict[str, Any]:
    wall = time.perf_counter() - start
    return {
        "wall_seconds": wall,
        "cpu_seconds": _cpu_seconds() - start_cpu,
        "setup_cpu_seconds": start_cpu,  # interpreter start, imports, catalog: paid once per process
        "rss_start_bytes": start_rss,
        "rss_peak_bytes": _maxrss_bytes(),
        **extra,
    }


RUNNERS = {"naive": run_naive, "threads": run_threads, "floor": run_floor, "controller": run_controller}


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    request = json.loads(Path(request_path).read_text())
    if request.get("profile"):  # bench.scale --profile: where the controller's CPU goes, as a cProfile file
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(RUNNERS[request["runner"]], request)
        profiler.dump_stats(request["profile"])
    else:
        result = RUNNERS[request["runner"]](request)
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
