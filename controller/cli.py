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
import shutil
import signal
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from controller.api_watch import ApiWatch, unanswered_api
from controller.batchfolder import ReportUnreadable, finished_notice, open_report, standing_report
from controller.catalog import Catalog, CatalogError
from controller.options import OptionError, RunOptions, add_arguments, flow_fields
from controller.ownership import BatchConflict, LeaseLost
from controller.plan import Launch, Mode, Plan, PlanError, ResultsVolume, plan
from controller.pricing import ESTIMATE_NOTE, PRICE_DATE, format_usage, plan_upper_bound
from controller.progress import Progress, log_to_console
from controller.report import ItemsUnreadable, Report
from controller.rerun import NothingToRerun, RerunError, plan_rerun
from controller.spec import Batch, SpecError, load_batch
from controller.store import StoreError, open_store
from controller.summary import plural, print_summary
from controller.target import choose_target, serving

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
# Under this much free space a folder cannot take a report: a batch's report.json alone may be megabytes.
MIN_FREE_BYTES = 16 * 1024**2


class InputError(Exception):
    """Input the user can fix, found before anything started; exit 2 with this message."""


# What a user can fix: each is one line ``fanout: ...`` and exit 2, never a traceback.
USER_ERRORS = (
    SpecError,
    PlanError,
    CatalogError,
    StoreError,
    BatchConflict,
    InputError,
    OptionError,
    RerunError,
    ReportUnreadable,
)


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
        API_KEY: {value: "s3cr3t-k3y"}               # a literal (8+ characters), redacted everywhere

Per item: job | image+command, args, env, task_count, timeout, retries (one-off runs), cpu, memory
(one-off runs), key, label. Unknown fields are errors; every problem is reported at once.
"""


def _wrap(text: str) -> str:
    """Prose for a help screen, wrapped to the terminal (argparse leaves raw descriptions as they are)."""
    width = min(shutil.get_terminal_size().columns, 100) - 2
    return "\n\n".join(
        textwrap.fill(" ".join(part.split()), width, break_on_hyphens=False) for part in text.split("\n\n")
    )


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Option help wrapped at spaces only: "us-central1" and "gs://BUCKET/PREFIX" stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


def _command(sub: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=_wrap(description),
        epilog=SPEC_HELP,
        formatter_class=_HelpFormatter,
    )
    if name == "plan":
        parser.add_argument("batch", nargs="+", help="batch spec files (YAML or JSON); see the format below")
    else:
        parser.add_argument("batch", help="batch spec file (YAML or JSON); see the format below")
    add_arguments(parser, name)  # type: ignore[arg-type]
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout",
        description=_wrap(
            "Fan out batches of containerized commands as Google Cloud Run job executions, watch them, and "
            "write a report on every item (JSON + HTML) to GCS or a folder."
        ),
        epilog="Quick start, no cloud needed: fanout run examples/hello.yaml\n"
        + textwrap.indent(
            _wrap("(with no --project, fanout starts its local Cloud Run emulator and writes to ./reports)"), "  "
        ),
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(
        sub,
        "run",
        "run a batch and write its report",
        "Run a batch on Cloud Run jobs, watch it to the end, and write <report-to>/<batch-id>/report.json and "
        "report.html. Exit 0 if every item succeeded, 1 if any did not, 2 for invalid input (nothing "
        "launched), 130 if interrupted (executions cancelled, report written).",
    )
    _command(
        sub,
        "plan",
        "show what a batch would launch (no API calls)",
        "Validate a batch and print the executions it would start, with no API call.",
    )

    _rerun_command(sub)

    emulator = sub.add_parser(
        "emulator",
        help="serve the local Cloud Run Admin API v2 + Cloud Logging emulator",
        add_help=False,
    )
    emulator.add_argument("args", nargs=argparse.REMAINDER)

    sub.add_parser(
        "server", help="the local Prefect server fanout run uses when none is configured (status, start, stop)"
    )

    sub.add_parser(
        "offline-credentials",
        help="placeholder Google credentials to try prefect-gcp blocks offline: "
        'eval "$(fanout offline-credentials)"',
    )

    limits = sub.add_parser(
        "limits",
        help="show the shared API-call budgets (the Prefect UI's Concurrency page) in calls per minute, or set one",
        description=_wrap(
            "Every batch of a project draws on one budget per kind of call, kept as a Prefect global rate limit "
            "(fanout:<project>:<region>:run, ...:write, ...:read, fanout:<project>:logs). Prefect states it as a "
            "limit (calls at once) and a slot decay (slots freed per second); calls per minute = limit + 60 x "
            "decay. Set one after a quota increase: fanout limits set fanout:my-proj:us-central1:run 600"
        ),
        formatter_class=_HelpFormatter,
    )
    limits_sub = limits.add_subparsers(dest="limits_command", metavar="SUBCOMMAND")
    limits_sub.add_parser("show", help="list them (the default)")
    set_limit = limits_sub.add_parser("set", help="set one (created if missing) to a number of calls per minute")
    set_limit.add_argument("name", help="the budget, e.g. fanout:my-proj:us-central1:run")
    set_limit.add_argument("per_minute", type=_count, metavar="CALLS_PER_MINUTE")

    report = sub.add_parser("report", help="work with saved reports")
    report_sub = report.add_subparsers(dest="report_command", required=True, metavar="SUBCOMMAND")
    show = report_sub.add_parser("show", help="print a saved report's summary (local path or gs:// URL)")
    show.add_argument("url", help="report.json, its folder, or gs://BUCKET/PREFIX/BATCH/report.json")
    show.add_argument("--failed", type=_count, default=20, help="how many failed items to list (default 20)")
    listing = report_sub.add_parser("list", help="list the batches whose reports are in a folder or gs:// prefix")
    listing.add_argument(
        "location", nargs="?", help="a report folder or gs://BUCKET/PREFIX (default: $FANOUT_REPORT_TO, else ./reports)"
    )
    results = sub.add_parser(
        "results",
        help="print a batch's results as JSON lines, running or ended (local path or gs:// URL)",
        description=_wrap(
            "Print a batch's item results as JSON lines, streamed from beside its report (the report itself is "
            "never loaded). While the batch runs, each value that lands in results/ prints as "
            '{"key", "task", "result"}; once it ended, every item prints as {"key", "state", "result"} in '
            "spec order. Without --follow, a running batch prints what has landed so far."
        ),
        formatter_class=_HelpFormatter,
    )
    results.add_argument("report", help="the batch's folder, its report.json, or gs://BUCKET/PREFIX/BATCH")
    results.add_argument("--follow", action="store_true", help="wait for the batch to end, printing as values land")
    results.add_argument("--poll", type=_count, default=2, help="seconds between looks with --follow (default 2)")
    results.add_argument("--timeout", type=_count, default=None, help="with --follow, give up after this many seconds")
    return parser


RERUN_HELP = """\
examples:
  fanout rerun reports/nightly                      # every item that did not succeed
  fanout rerun gs://my-bucket/fanout/nightly/report.json --states failed,timed_out
  fanout rerun reports/nightly --spec nightly.yaml  # items with literal secrets: the spec again

The new batch is <batch>-rerun-<n>, written beside the report unless --report-to says otherwise; its
report says rerun_of, and the report it reruns lists it under reruns. Nothing to rerun: a message, exit 0.
"""


def _rerun_command(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "rerun",
        help="run a finished batch's items that did not succeed again, as a new batch",
        description=_wrap(
            "Run again, as a new batch, the items of a finished batch that did not succeed (or those in "
            "--states), each with its original job or image, args and env, taken from the spec the batch stored "
            "beside its report (literal secrets are never stored: for them give the spec again with --spec). "
            "Exit codes as for fanout run; 2 for a missing or malformed report, unknown states or a spec that "
            "is not the batch's, before anything starts."
        ),
        epilog=RERUN_HELP,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("report", help="the batch's report.json, its folder, or gs://BUCKET/PREFIX/BATCH/report.json")
    parser.add_argument(
        "--states",
        help="comma-separated states of the items to rerun: failed, timed_out, cancelled, not_launched, "
        "succeeded (default: every state but succeeded)",
    )
    parser.add_argument(
        "--spec",
        metavar="FILE",
        help="the spec file the batch ran, given again: only needed when items to rerun have literal secret "
        "values; it must be that very spec (checked by digest)",
    )
    add_arguments(parser, "run")


def _count(text: str) -> int:
    """A count given on the command line: a short whole number, 0 or more."""
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise argparse.ArgumentTypeError(f"expected a whole number of at most 9 digits, got {shown!r}")
    return int(text)


def _error(message: str) -> int:
    print(f"fanout: error: {message}", file=sys.stderr)
    return EXIT_INVALID


def _catalog(options: RunOptions) -> Catalog:
    try:
        return Catalog.load(options.catalog)
    except OSError as exc:  # a name the file system refuses (too long, a loop); a missing one is a CatalogError
        raise InputError(f"catalog {options.catalog!r:.60}: {exc.strerror or exc}") from None


def _load(options: RunOptions, source: str) -> tuple[Catalog, Batch, Plan]:
    """Read and check the catalog and the spec once; the plan shows the spec fits the catalog's jobs."""
    catalog = _catalog(options)
    batch = load_batch(source, catalog, batch_id=options.batch_id)
    volume, _ = _results_volume(options, catalog, batch)
    the_plan = plan(
        batch,
        catalog,
        mode=Mode(options.mode),
        manifest_root="<report-to>/manifests",
        results_volume=volume,
        max_running_tasks=options.max_running_tasks,
    )
    return catalog, batch, the_plan


def _results_volume(options: RunOptions, catalog: Catalog, batch: Batch) -> tuple[ResultsVolume | None, bool]:
    """Where one-off jobs will mount the batch's results folder, as the run decides it (a one-off job's name
    is a digest that includes it), and whether that is known before the run: it is on the embedded emulator
    and for a local folder on Google Cloud (no mount); a bucket, a block or another emulator is looked at
    when the run starts."""
    destination = options.report_to or catalog.report_to or "reports"
    if options.report_block or options.emulator or destination.startswith("gs://"):
        return None, False
    if options.project or catalog.project:
        return None, True
    from controller.emulator_jobs import report_buckets
    from controller.results import volume
    from controller.store import LocalStore

    return volume(LocalStore(destination), batch.batch_id, report_buckets(destination)), True


def _plan_json(batch: Batch, the_plan: Plan) -> dict[str, Any]:
    from controller.cloudrun import overrides_summary

    return {
        "batch_id": batch.batch_id,
        "items": len(batch.items),
        "mode": str(the_plan.mode),
        "one_off_jobs": [job.name for job in the_plan.one_off_jobs],
        "max_running_tasks": the_plan.max_running_tasks,
        "waves": the_plan.waves,
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


def _launch_line(launch: Launch) -> str:
    what = f"{plural(len(launch.items), 'item')} as tasks" if launch.packed else f"item {launch.items[0].key}"
    timeout = f", timeout {launch.timeout_seconds:.0f}s" if launch.timeout_seconds else ""
    args_text = "" if launch.packed or launch.args is None else f", args {list(launch.args)}"
    return f"  [{launch.index}] {launch.job}: {what}, {plural(launch.task_count, 'task')}{timeout}{args_text}"


def cmd_plan(args: argparse.Namespace) -> int:
    """Each spec's plan (``fanout plan examples/*.yaml``): every spec is checked first, and every problem of
    every spec reported, before any plan is printed. ``--json``: one object, or a list for several specs."""
    options = RunOptions.from_cli(args)
    loaded, problems = [], []
    for source in args.batch:
        try:
            loaded.append(_load(options, source))
        except USER_ERRORS as exc:
            problems.append(f"{source}: {exc}" if len(args.batch) > 1 else str(exc))
    if problems:
        raise InputError("\n".join(problems))
    if options.as_json:
        bodies = [_plan_body(catalog, batch, the_plan) for catalog, batch, the_plan in loaded]
        json.dump(bodies[0] if len(bodies) == 1 else bodies, sys.stdout, indent=1)
        print()
        return EXIT_OK
    for number, (catalog, batch, the_plan) in enumerate(loaded):
        if number:
            print()
        _print_plan(options, catalog, batch, the_plan)
    return EXIT_OK


def _plan_body(catalog: Catalog, batch: Batch, the_plan: Plan) -> dict[str, Any]:
    bound = plan_upper_bound(the_plan, catalog)
    body = _plan_json(batch, the_plan)
    body["upper_bound"] = {
        "vcpu_seconds": round(bound.vcpu_seconds, 3),
        "gib_seconds": round(bound.gib_seconds, 3),
        "cost_usd": round(bound.cost_usd, 9),
    }
    return body


def _say(text: str) -> None:
    """Print prose. On a terminal each line longer than it is wrapped at spaces, its continuation indented
    under it: the terminal itself would cut a word or a URL in two at its edge. Elsewhere (a log, a pipe)
    lines stay whole."""
    if not sys.stdout.isatty():
        print(text)
        return
    width = shutil.get_terminal_size().columns
    for line in text.splitlines() or [""]:
        indent = " " * (len(line) - len(line.lstrip()))
        at_spaces = textwrap.TextWrapper(
            width, subsequent_indent=f"{indent}  ", break_long_words=False, break_on_hyphens=False
        )
        print(at_spaces.fill(line) if len(line) > width else line)


def _print_plan(options: RunOptions, catalog: Catalog, batch: Batch, the_plan: Plan) -> None:
    bound = plan_upper_bound(the_plan, catalog)
    packed = sum(1 for launch in the_plan.launches if launch.packed)
    _say(
        f"batch {batch.batch_id}: {plural(len(batch.items), 'item')} -> "
        f"{plural(len(the_plan.launches), 'execution')} ({packed:,} packed, "
        f"{len(the_plan.launches) - packed:,} per item), mode {the_plan.mode}"
    )
    if the_plan.max_running_tasks is not None:
        _say(
            f"at most {plural(the_plan.max_running_tasks, 'task')} running at once: "
            f"{plural(len(the_plan.launches), 'launch', 'launches')} in about {plural(the_plan.waves, 'wave')} "
            "(tasks of equal length)"
        )
    for job in the_plan.one_off_jobs:
        _say(f"  creates one-off job {job.name} ({job.image}: {' '.join(job.command)})")
    if the_plan.one_off_jobs and not _results_volume(options, catalog, batch)[1]:
        _say(
            "  (a one-off job's name includes where it mounts the results folder, looked up when the run "
            "starts: the run's may differ)"
        )
    shown = the_plan.launches[:20]
    for launch in shown:
        _say(_launch_line(launch))
    if len(the_plan.launches) > len(shown):
        _say(f"  ... and {len(the_plan.launches) - len(shown):,} more (use --json for all)")
    _say(
        f"at most {format_usage(bound)} if every task ran every attempt to its timeout "
        f"({ESTIMATE_NOTE}, prices of {PRICE_DATE})"
    )
    _say("nothing was launched (dry run)")


def _interruption(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


def _check_report_to(options: RunOptions, catalog: Catalog, *, embedded: bool) -> None:
    """Refuse a report location that cannot work, before anything starts."""
    if options.report_block:
        return
    destination = options.report_to or catalog.report_to or "reports"
    if destination.startswith("gs://"):
        if embedded and not os.environ.get("STORAGE_EMULATOR_HOST"):
            raise InputError(
                f"--report-to {destination}: the local emulator has no Cloud Storage; set STORAGE_EMULATOR_HOST "
                "to a fake-gcs-server, pass --project to use a real project, or give a folder"
            )
        return
    problem = writable_folder_problem(Path(destination))
    if problem:
        raise InputError(f"--report-to {destination}: {problem}")


def writable_folder_problem(folder: Path) -> str | None:
    """Why reports cannot be written under ``folder`` (not a folder, read-only, full), or None."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{existing} is not a folder"
    try:  # a probe rather than os.access: it also sees read-only file systems, whoever runs it
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"{existing} is not writable ({exc.strerror or exc})"
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        return f"the disk of {existing} is full: {free:,} bytes free, under the {MIN_FREE_BYTES:,} a report needs"
    return None


def _storage_client() -> Any:
    """A google-cloud-storage client for reading reports (fake-gcs-server when STORAGE_EMULATOR_HOST is set)."""
    from controller.clients import Clients, Endpoints

    return Clients(project=os.environ.get("FANOUT_PROJECT") or "-", endpoints=Endpoints.from_env()).storage


def _gcs_if(destination: str) -> Any:
    return _storage_client() if destination.startswith("gs://") else None


def _finished_already(
    options: RunOptions, catalog: Catalog, batch: Batch, the_plan: Plan, spec: str | None
) -> int | None:
    """When the batch already ran to its end where its report goes: say so plainly, and the exit code its
    report gives; else None. Before the Prefect server or the emulator starts."""
    if options.report_block:
        return None  # the flow finds it in the block's bucket, and says the same in its state message
    destination = options.report_to or catalog.report_to or "reports"
    store = open_store(destination, _gcs_if(destination))
    report = standing_report(store, batch, len(the_plan.launches))
    if report is None:
        return None
    _say(finished_notice(report, store.url(batch.batch_id, "report.json"), spec))
    return EXIT_OK if report.summary.not_succeeded == 0 else EXIT_ITEMS_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    options = RunOptions.from_cli(args)
    catalog, batch, the_plan = _load(options, args.batch)  # validate first: invalid input launches nothing
    return _launch(options, catalog, batch, the_plan, {"batch": args.batch, "batch_id": batch.batch_id}, args.batch)


def cmd_rerun(args: argparse.Namespace) -> int:
    options = RunOptions.from_cli(args)
    catalog = _catalog(options)
    spec = load_batch(Path(args.spec), catalog) if args.spec else None
    try:
        todo = plan_rerun(
            args.report, states=args.states, spec=spec, spec_name=args.spec, storage_client=_gcs_if(args.report)
        )
    except NothingToRerun as exc:
        print(f"fanout: {exc}")
        return EXIT_OK
    if not (options.report_to or options.report_block):
        options = options.model_copy(update={"report_to": todo.parent.root})
    destination = None if options.report_block else str(options.report_to)
    store = None if destination is None else open_store(destination, _gcs_if(destination))
    batch = todo.batch(catalog, todo.candidate_id(store, options.batch_id))
    the_plan = plan(batch, catalog, mode=Mode(options.mode), manifest_root="<report-to>/manifests")
    flow_args = {
        "batch": args.spec,
        "rerun_of": args.report,
        "rerun_states": [str(state) for state in todo.states],
        "batch_id": options.batch_id,
    }
    return _launch(options, catalog, batch, the_plan, flow_args, None)


def _launch(
    options: RunOptions, catalog: Catalog, batch: Batch, the_plan: Plan, flow_args: dict[str, Any], spec: str | None
) -> int:
    """Run the flow for a checked batch (``flow_args``: the flow's batch parameters); the exit code."""
    target = choose_target(
        options.project or catalog.project,
        catalog,
        region=options.region,
        report_to=options.report_to or catalog.report_to or "reports",
        emulator=options.emulator,
    )
    _check_report_to(options, catalog, embedded=target.embedded is not None)
    if (code := _finished_already(options, catalog, batch, the_plan, spec)) is not None:
        return code

    prefect_api = contextlib.ExitStack()
    if (code := _enter_prefect_api(prefect_api)) is not None:
        return code
    console = Console(stderr=True)
    if (embedded := prefect_api.enter_context(serving(target))) and not options.quiet:
        console.print(f"fanout: no --project: running on the local emulator at {embedded}", highlight=False)
    from controller.flow import ReportNotStored, fan_out

    log_to_console(console, quiet=options.quiet, reported=(*USER_ERRORS, LeaseLost, ReportNotStored))
    not_stored: ReportNotStored | None = None
    watch = ApiWatch()
    try:
        report, url, interrupted = _run_flow(
            fan_out, options, batch, catalog, target.project, console, flow_args, watch
        )
    except ReportNotStored as exc:  # the items ran: their summary still counts, the lost report fails the run
        not_stored, report, url, interrupted = exc, exc.report, None, False
    except LeaseLost as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        what = "another controller runs it now" if exc.taken else "another controller may run it now"
        print(f"fanout: {what}; this one stopped launching and wrote none of the batch's files", file=sys.stderr)
        return EXIT_ITEMS_FAILED
    except Exception as exc:
        if (api := unanswered_api()) is None:
            raise
        print(f"fanout: the Prefect API at {api} does not answer ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_ITEMS_FAILED
    finally:
        watch.stop()
        prefect_api.close()  # the embedded emulator first, then the Prefect server
    if report is None:
        print("fanout: the batch was interrupted before its report was built", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _conclude(report, url, interrupted=interrupted, not_stored=not_stored)


def _conclude(report: Report, url: str | None, *, interrupted: bool, not_stored: Exception | None) -> int:
    """Print the summary and where the report is; the exit code."""
    print_summary(report, Console(stderr=False))
    if not_stored is not None:
        print(f"fanout: {not_stored}", file=sys.stderr)
        return EXIT_ITEMS_FAILED
    _print_where(url)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.summary.not_succeeded == 0 else EXIT_ITEMS_FAILED


def _print_where(url: str | None) -> None:
    """The report's location, then last the page a person opens (report.json is for programs)."""
    from controller.artifacts import report_html_link  # Prefect is imported by now: the flow ran

    print(f"report: {url}")
    if url is not None:
        print(f"open: {report_html_link(url)}")


@contextlib.contextmanager
def _interrupting_signals(signalled: list[int]) -> Iterator[None]:
    """SIGTERM, and SIGINT unless it is ignored (nohup), are recorded in ``signalled`` and handed to the
    batch's watch, which raises KeyboardInterrupt between polls (``controller.batch.interrupts``: never in the
    middle of an API call): the flow catches it, cancels the batch and ends Cancelled, and the command then
    knows it was interrupted (exit 130). SIGINT's own handler again afterwards."""
    from controller.batch import interrupts

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        signalled.append(signum)  # appends only: a handler that takes a lock can wait for itself
        interrupts.pending.append(_interruption(signum))

    interrupts.taken = True
    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupts.taken = False
        interrupts.pending.clear()  # the next run in this process (a test, the warm host's child) starts with none


def _run_flow(
    fan_out: Any,
    options: RunOptions,
    batch: Batch,
    catalog: Catalog,
    project: str,
    console: Console,
    flow_args: dict[str, Any],
    watch: ApiWatch,
) -> tuple[Report | None, str | None, bool]:
    """Run the flow in this process with live progress; returns the report, where it went, and whether the
    run was interrupted. ``watch`` starts once the report is stored (``ApiWatch``)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from controller.flow import (
        MAX_LAUNCH_THREADS,
        BatchCancelled,
        prepared_batch,
        prepared_catalog,
        progress_sink,
        report_sink,
    )

    stack = contextlib.ExitStack()
    captured: dict[str, Any] = {}
    progress = None if options.quiet else Progress(len(batch.items), console=console)
    signalled: list[int] = []  # the signals that interrupted the run (_interrupting_signals)

    def reported(report: Report, url: str) -> None:
        captured.update(report=report, url=url)

        def conclude() -> int:
            if progress is not None:
                progress.close()
            return _conclude(report, url, interrupted=bool(signalled), not_stored=None)

        watch.start(conclude)

    # What the flow picks up from this context, for this run only: a caller that runs more than one batch in
    # a process (a test, a notebook) must not hand one run's batch to the next.
    tokens = [
        (progress_sink, progress_sink.set(progress.update if progress is not None else None)),
        (report_sink, report_sink.set(reported)),
        # A rerun's batch gets its id in the flow, which lists it in the report it reruns.
        (prepared_batch, prepared_batch.set(None if "rerun_of" in flow_args else batch)),
        (prepared_catalog, prepared_catalog.set(catalog)),
    ]
    parameters = {name: getattr(options, name) for name in flow_fields()}
    interrupted = False
    try:
        stack.enter_context(_interrupting_signals(signalled))
        flow = fan_out.with_options(
            task_runner=ThreadPoolTaskRunner(max_workers=min(MAX_LAUNCH_THREADS, options.concurrency))
        )
        # The state, not its result: a Failed run (items failed) is exit 1 from the report, not a traceback. A
        # signal the flow caught ends it Cancelled, with its report written.
        state = flow(**{**parameters, "project": project, **flow_args}, return_state=True)
        if "report" not in captured:
            state.result()  # a crash before the report (or the batch lost to another controller): raise it
        # Prefect's engine turns a SIGTERM during the run into its own TerminationSignal, past the handler
        # set here: the flow says it was interrupted in its Cancelled state's data.
        ended = state.result(raise_on_failure=False) if state.is_cancelled() else None
        interrupted = bool(signalled) or (isinstance(ended, BatchCancelled) and ended.interrupted)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stack.close()
        if progress is not None:
            if (report := captured.get("report")) is not None:  # the last poll came before a cancellation
                progress.update({str(state): n for state, n in report.summary.by_state.items()})
            progress.close()
        for var, token in tokens:
            var.reset(token)  # type: ignore[attr-defined]
    return captured.get("report"), captured.get("url"), interrupted


def _enter_prefect_api(stack: contextlib.ExitStack) -> int | None:
    """Enter the Prefect API this command uses (the local server started if none is configured) on ``stack``,
    before Prefect is imported, which reads PREFECT_API_URL once; the exit code when there is none to use."""
    from controller.prefect_server import ServerError, ServerSettingError, local_api

    try:
        stack.enter_context(local_api())
    except ServerError as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return EXIT_INVALID if isinstance(exc, ServerSettingError) else EXIT_ITEMS_FAILED
    return None


def cmd_limits(args: argparse.Namespace) -> int:
    from controller.options import MAX_RATE_PER_MINUTE

    if args.limits_command == "set":
        if not args.name.startswith("fanout:"):
            raise InputError(f"{args.name!r:.80} is not a fanout budget: its name starts with fanout:")
        if not 1 <= args.per_minute <= MAX_RATE_PER_MINUTE:
            raise InputError(f"calls per minute must be between 1 and {MAX_RATE_PER_MINUTE:,}")
    prefect_api = contextlib.ExitStack()
    if (code := _enter_prefect_api(prefect_api)) is not None:
        return code
    with prefect_api:
        from controller.quota import set_rate_limit, shared_rate_limits

        if args.limits_command == "set":
            burst, decay = set_rate_limit(args.name, args.per_minute)
            print(f"{args.name}: {args.per_minute:,} calls per minute (Prefect: limit {burst:,}, decay {decay:g}/s)")
            return EXIT_OK
        rows = shared_rate_limits()
        if not rows:
            print("no shared API-call budget yet: a project's first fanout run creates its budgets")
        for name, per_minute, limit, decay in rows:
            print(f"{name}: {per_minute:,} calls per minute (Prefect: limit {limit:,}, decay {decay:g}/s)")
        return EXIT_OK


def cmd_report_list(args: argparse.Namespace) -> int:
    """Every batch with a report.json under the location, newest first: id, status, counts, end, report."""
    location = args.location or os.environ.get("FANOUT_REPORT_TO") or "reports"
    rows = []
    for url, data in _reports_under(location):
        try:
            body = json.loads(data)
            summary = body["summary"]
            row = (str(body["finished_at"]), str(body["batch_id"]), str(body["status"]), int(summary["total"]))
            not_succeeded = row[3] - int(summary["by_state"].get("succeeded", 0))
        except (ValueError, KeyError, TypeError):
            print(f"fanout: {url} is not a fanout report; skipped", file=sys.stderr)
            continue
        rows.append((*row, not_succeeded, url))
    if not rows:
        print(f"no batch reports under {location}")
        return EXIT_OK
    width = max(len(row[1]) for row in rows)
    print(f"{'batch':<{width}}  {'status':<9}  {'items':>7}  {'not ok':>7}  {'finished (UTC)':<19}  report")
    for finished, batch_id, status, total, not_succeeded, url in sorted(rows, reverse=True):
        print(f"{batch_id:<{width}}  {status:<9}  {total:>7,}  {not_succeeded:>7,}  {finished[:19]:<19}  {url}")
    return EXIT_OK


def _reports_under(location: str) -> Iterator[tuple[str, bytes]]:
    """(url, bytes) of each ``<batch>/report.json`` right under a folder or a gs:// prefix."""
    if location.startswith("gs://"):
        bucket, _, prefix = location.removeprefix("gs://").partition("/")
        prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        client = _storage_client()
        for blob in client.list_blobs(bucket, prefix=prefix):
            if blob.name.count("/") == prefix.count("/") + 1 and blob.name.endswith("/report.json"):
                yield f"gs://{bucket}/{blob.name}", blob.download_as_bytes()
        return
    folder = Path(location).expanduser()
    if not folder.is_dir():
        raise InputError(f"{location}: no such folder")
    for path in sorted(folder.glob("*/report.json")):
        if path.is_file():
            yield str(path), path.read_bytes()


def cmd_report_show(args: argparse.Namespace) -> int:
    # A v2 report.json is its summary: the items are read shard by shard as the summary needs them.
    found = open_report(args.url, _gcs_if(args.url))
    try:
        print_summary(found.report, Console(), max_failed=args.failed)
    except ItemsUnreadable as exc:
        return _error(f"{found.url}: {exc}")
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    """``fanout results``: one JSON line per value as it lands, then per item once the batch ended."""
    from controller.results import Landed, follow_results

    records = follow_results(
        args.report,
        _gcs_if(args.report),
        follow=args.follow,
        poll_seconds=max(1, args.poll),
        timeout_seconds=args.timeout,
    )
    for record in records:
        line: dict[str, Any]
        if isinstance(record, Landed):
            line = {"key": record.key, "task": record.task, "result": record.result}
        else:
            line = {"key": record.key, "state": str(record.state), "result": record.result}
            if record.result_uri:
                line["result_uri"] = record.result_uri
        print(json.dumps(line, ensure_ascii=False, separators=(",", ":")), flush=True)
    return EXIT_OK


def _own_command(argv: list[str]) -> int | None:
    """The commands that parse their own arguments and import nothing of the rest; None for the others."""
    if argv[:1] == ["emulator"]:
        from cloudrun_emulator.__main__ import main as emulator_main

        return emulator_main(argv[1:], prog="fanout emulator")
    if argv[:1] == ["server"]:
        from controller.prefect_server import main as server_main

        return server_main(argv[1:])
    if argv == ["offline-credentials"]:
        from controller.offline import print_offline_credentials
        from controller.prefect_server import state_dir

        return print_offline_credentials(state_dir().parent)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if (code := _own_command(argv)) is not None:
        return code
    parser = build_parser()
    if not argv:
        parser.print_help()
        return EXIT_OK
    args = parser.parse_args(argv)
    commands = {"plan": cmd_plan, "run": cmd_run, "rerun": cmd_rerun, "results": cmd_results, "limits": cmd_limits}
    if args.command == "report":
        command = cmd_report_list if args.report_command == "list" else cmd_report_show
    else:
        command = commands[args.command]
    try:
        return command(args)
    except USER_ERRORS as exc:
        for line in str(exc).splitlines():
            print(f"fanout: {line}" if line[:1] != " " else line, file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("fanout: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
