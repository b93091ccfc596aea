"""``fanout``: run, plan and inspect batches of Cloud Run job executions.

Exit codes: 0 every item succeeded; 1 an item failed, timed out, was cancelled or never launched;
2 the input is invalid (nothing was launched); 130 interrupted (running executions were cancelled and the
report was written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from controller.catalog import Catalog, CatalogError
from controller.plan import Mode, PlanError, plan
from controller.spec import SpecError, load_batch
from controller.store import StoreError

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
LOCAL_PROJECT = "local-project"

SPEC_HELP = """\
batch spec (YAML or JSON):

  batch_id: nightly-2026-11-28     # optional; generated when absent; reuse it to resume a batch
  defaults:                        # applied to every item that does not set its own
    job: wordcount                 # a Cloud Run job from the catalog (jobs/*/job.yaml or Terraform's)
    timeout: 10m
  items:
    - args: ["https://example.com/a.txt"]
      env: {LANG: en}
      label: first document
    - key: doc-b                   # unique; defaults to item-00001 ...
      args: ["/data/b.txt"]
      task_count: 2
    - image: python:3.12-slim      # a one-off container run instead of a provisioned job
      command: ["python", "-c", "print('hi')"]
      env:
        TOKEN: {secret: projects/p/secrets/token}   # Secret Manager: never passes through fanout
        API_KEY: {value: "s3cr3t"}                   # a literal, redacted in every report and log

Per item: job | image+command, args, env, task_count, timeout, retries (one-off runs), cpu, memory
(one-off runs), key, label. Unknown fields are errors; every problem is reported at once.
"""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch", help="batch spec file (YAML or JSON); see the format below")
    parser.add_argument(
        "--catalog",
        default=_env("FANOUT_CATALOG"),
        help="job catalog: a jobs/ folder or `terraform output -json` saved to a file "
        "(default: the bundled example jobs; env FANOUT_CATALOG)",
    )
    parser.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=_env("FANOUT_MODE", "auto"),
        help="auto: pack items of packable jobs into shared executions; packed: insist; per-item: one "
        "execution per item (env FANOUT_MODE; default auto)",
    )
    parser.add_argument("--batch-id", default=None, help="batch id (overrides the spec's); reuse to resume")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout",
        description="Fan out batches of containerized commands as Google Cloud Run job executions, watch "
        "them, and write a report on every item (JSON + HTML) to GCS or a folder.",
        epilog="Quick start, no cloud needed: fanout run examples/hello.yaml\n"
        "  (with no --project, fanout starts its local Cloud Run emulator and writes to ./reports)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a batch and write its report",
        description="Run a batch on Cloud Run jobs, watch it to the end, and write <report-to>/<batch-id>/"
        "report.json and report.html. Exit 0 if every item succeeded, 1 if any did not, 2 for invalid "
        "input (nothing launched), 130 if interrupted (executions cancelled, report written).",
        epilog=SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(run)
    run.add_argument(
        "--project",
        default=_env("FANOUT_PROJECT"),
        help="Google Cloud project (env FANOUT_PROJECT). Without one, the local emulator is used",
    )
    run.add_argument(
        "--region",
        default=_env("FANOUT_REGION"),
        help="region (env FANOUT_REGION; default: the catalog's, else us-central1)",
    )
    run.add_argument(
        "--report-to",
        default=_env("FANOUT_REPORT_TO"),
        help="gs://BUCKET/PREFIX or a folder (env FANOUT_REPORT_TO; default: the Terraform catalog's report "
        "bucket, else ./reports)",
    )
    run.add_argument(
        "--report-block",
        help="prefect-gcp GcsBucket block to write the report to (its bucket, folder and credentials)",
    )
    run.add_argument(
        "--manifests-to",
        default=_env("FANOUT_MANIFESTS_TO"),
        help="where packed launches' manifests go (default: the Terraform catalog's manifest prefix, else "
        "beside the report); the jobs' service account must be able to read there",
    )
    run.add_argument(
        "--concurrency",
        type=int,
        default=int(_env("FANOUT_CONCURRENCY", "16") or 16),
        help="launch requests in flight at once (env FANOUT_CONCURRENCY; default 16)",
    )
    run.add_argument("--deadline", help="cancel the batch after this long, e.g. 2h or 45m")
    run.add_argument(
        "--logs",
        choices=["failed", "all", "none"],
        default="failed",
        help="which items get log tails in the report (default: failed)",
    )
    run.add_argument("--credentials-block", help="prefect-gcp GcpCredentials block name (default: ADC)")
    run.add_argument(
        "--emulator",
        default=_env("FANOUT_EMULATOR_HOST"),
        help="URL of a running `fanout emulator` to use instead of Google (env FANOUT_EMULATOR_HOST)",
    )
    run.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="seconds between polls while executions change; slows to 30 s while nothing does (default 2)",
    )
    run.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="KIND=N",
        help="API calls per minute for KIND in run, write, read, logs ('none' for unlimited); defaults "
        "follow Cloud Run's and Logging's default quotas (run=180 write=180 read=1000 logs=60)",
    )
    run.add_argument("--quiet", action="store_true", help="no live progress")

    plan_cmd = sub.add_parser(
        "plan",
        help="show what a batch would launch (no API calls)",
        description="Validate a batch and print the executions it would start, with no API call.",
        epilog=SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(plan_cmd)
    plan_cmd.add_argument("--json", action="store_true", help="print the launches and their overrides as JSON")

    emulator = sub.add_parser(
        "emulator",
        help="serve the local Cloud Run Admin API v2 + Cloud Logging emulator",
        add_help=False,
    )
    emulator.add_argument("args", nargs=argparse.REMAINDER)

    sub.add_parser(
        "server", help="the local Prefect server fanout run uses when none is configured (status, start, stop)"
    )

    report = sub.add_parser("report", help="work with saved reports")
    report_sub = report.add_subparsers(dest="report_command", required=True, metavar="SUBCOMMAND")
    show = report_sub.add_parser("show", help="print a saved report's summary (local path or gs:// URL)")
    show.add_argument("url", help="report.json, its folder, or gs://BUCKET/PREFIX/BATCH/report.json")
    show.add_argument("--failed", type=int, default=20, help="how many failed items to list (default 20)")
    return parser


def _error(message: str) -> int:
    print(f"fanout: error: {message}", file=sys.stderr)
    return EXIT_INVALID


def _load(args: argparse.Namespace) -> tuple[Catalog, Any, Any]:
    catalog = Catalog.load(args.catalog)
    batch = load_batch(args.batch, catalog, batch_id=args.batch_id)
    return catalog, batch, plan(batch, catalog, mode=Mode(args.mode), manifest_root="<report-to>/manifests")


def cmd_plan(args: argparse.Namespace) -> int:
    from controller.cloudrun import overrides_summary

    _catalog, batch, the_plan = _load(args)
    if args.json:
        out = {
            "batch_id": batch.batch_id,
            "items": len(batch.items),
            "mode": str(the_plan.mode),
            "one_off_jobs": [job.name for job in the_plan.one_off_jobs],
            "launches": [
                {
                    "index": launch.index,
                    "job": launch.job,
                    "packed": launch.packed,
                    "items": [item.key for item in launch.items],
                    "overrides": overrides_summary(launch),
                }
                for launch in the_plan.launches
            ],
        }
        json.dump(out, sys.stdout, indent=1)
        print()
        return EXIT_OK
    packed = [launch for launch in the_plan.launches if launch.packed]
    print(
        f"batch {batch.batch_id}: {len(batch.items)} item(s) -> {len(the_plan.launches)} execution(s) "
        f"({len(packed)} packed, {len(the_plan.launches) - len(packed)} per item), mode {the_plan.mode}"
    )
    for job in the_plan.one_off_jobs:
        print(f"  creates one-off job {job.name} ({job.image}: {' '.join(job.command)})")
    shown = the_plan.launches[:20]
    for launch in shown:
        what = f"{len(launch.items)} items as tasks" if launch.packed else f"item {launch.items[0].key}"
        timeout = f", timeout {launch.timeout_seconds:.0f}s" if launch.timeout_seconds else ""
        args_text = "" if launch.packed or launch.args is None else f", args {list(launch.args)}"
        print(f"  [{launch.index}] {launch.job}: {what}, {launch.task_count} task(s){timeout}{args_text}")
    if len(the_plan.launches) > len(shown):
        print(f"  ... and {len(the_plan.launches) - len(shown)} more (use --json for all)")
    print("nothing was launched (dry run)")
    return EXIT_OK


def _parse_rates(specs: list[str]) -> dict[str, int | None] | None:
    """``["run=60", "logs=none"]`` -> ``{"run": 60, "logs": None}`` (other kinds keep their defaults)."""
    from dataclasses import asdict

    from controller.quota import Rates

    if not specs:
        return None
    rates: dict[str, int | None] = asdict(Rates())
    for spec in specs:
        kind, _, value = spec.partition("=")
        if kind not in rates:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(rates)}")
        if value.lower() in {"none", "unlimited"}:
            rates[kind] = None
        elif value.isdigit() and int(value) > 0:
            rates[kind] = int(value)
        else:
            raise ValueError(f"{spec!r}: give a positive number of calls per minute, or 'none'")
    return rates


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_run(args: argparse.Namespace) -> int:
    catalog, batch, _ = _load(args)  # validate before anything starts: invalid input launches nothing
    if args.concurrency < 1:
        return _error("--concurrency must be at least 1")

    from controller.durations import parse_duration

    if args.deadline:
        try:
            parse_duration(args.deadline)
        except ValueError as exc:
            return _error(f"--deadline: {exc}")

    try:
        rates = _parse_rates(args.rate)
    except ValueError as exc:
        return _error(f"--rate: {exc}")
    if args.poll_interval <= 0:
        return _error("--poll-interval must be positive")

    from controller.prefect_server import ServerError, ServerSettingError, local_api

    prefect_api = contextlib.ExitStack()
    try:  # before Prefect is imported, which reads PREFECT_API_URL once
        prefect_api.enter_context(local_api())
    except ServerError as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return EXIT_INVALID if isinstance(exc, ServerSettingError) else EXIT_ITEMS_FAILED

    emulator = None
    project = args.project or catalog.project
    if args.emulator:
        os.environ["FANOUT_EMULATOR_HOST"] = args.emulator
        project = project or LOCAL_PROJECT
    elif not project:
        from controller.emulator import Emulator

        emulator = Emulator(catalog=catalog, project=LOCAL_PROJECT, region=args.region or "us-central1")
        emulator.start()
        os.environ["FANOUT_EMULATOR_HOST"] = emulator.url
        project = LOCAL_PROJECT
        print(f"fanout: no --project: running on the local emulator at {emulator.url}", file=sys.stderr)

    from prefect.task_runners import ThreadPoolTaskRunner
    from rich.console import Console

    from controller.flow import MAX_LAUNCH_THREADS, fan_out, progress_sink, report_sink
    from controller.progress import Progress
    from controller.summary import print_summary

    captured: dict[str, Any] = {}
    progress = None if args.quiet else Progress(len(batch.items))
    if progress is not None:
        progress_sink.set(progress.update)
    report_sink.set(lambda report, url: captured.update(report=report, url=url))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupted = False
    try:
        flow = fan_out.with_options(
            task_runner=ThreadPoolTaskRunner(max_workers=min(MAX_LAUNCH_THREADS, args.concurrency))  # type: ignore[arg-type]
        )
        flow(
            batch=args.batch,
            project=project,
            region=args.region,
            report_to=args.report_to,
            report_block=args.report_block,
            manifests_to=args.manifests_to,
            concurrency=args.concurrency,
            mode=args.mode,
            batch_id=batch.batch_id,
            catalog=args.catalog,
            deadline=args.deadline,
            logs_for=args.logs,
            gcp_credentials_block=args.credentials_block,
            poll_interval=args.poll_interval,
            rates=rates,
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress is not None:
            progress.close()
        if emulator is not None:
            emulator.stop()
        prefect_api.close()
    report = captured.get("report")
    if report is None:
        print("fanout: the batch was interrupted before its report was built", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(report, Console(stderr=False))
    print(f"report: {captured['url']}")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.summary.not_succeeded == 0 else EXIT_ITEMS_FAILED


def cmd_report_show(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from rich.console import Console

    from controller.report import Report
    from controller.store import read_url
    from controller.summary import print_summary

    storage = None
    if args.url.startswith("gs://"):
        from controller.clients import Clients, Endpoints

        storage = Clients(project=_env("FANOUT_PROJECT", "-") or "-", endpoints=Endpoints.from_env()).storage
    url = (
        args.url
        if not args.url.startswith("gs://") or args.url.endswith(".json")
        else args.url.rstrip("/") + "/report.json"
    )
    data = read_url(url, storage)
    try:
        report = Report.from_json(data)
    except ValidationError as exc:
        return _error(f"{url} is not a fanout report: {exc.errors()[0]['msg']}")
    print_summary(report, Console(), max_failed=args.failed)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        from controller.emulator.__main__ import main as emulator_main

        return emulator_main(argv[1:])
    if argv[:1] == ["server"]:
        from controller.prefect_server import main as server_main

        return server_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "plan":
            return cmd_plan(args)
        if args.command == "run":
            return cmd_run(args)
        return cmd_report_show(args)
    except (SpecError, PlanError, CatalogError, StoreError) as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("fanout: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
