"""``python -m bench``: run every case against the emulator, print the table and the targets, write JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import analysis
from bench.emulator import PROJECT, REGION, REPO, emulator, reset_stats, stats
from bench.workload import (
    FLOOR,
    FULL,
    JOB,
    MODE_TITLES,
    MODES,
    NAIVE,
    PACKED_DEFAULT_POLL,
    PEER_THREADS,
    PER_ITEM,
    QUICK,
    THREADS,
    Case,
    batch_spec,
    failing_items,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
PARALLELISM = 100  # the emulator's --max-running-tasks: how many tasks run at once, in every mode
CONCURRENCY = 32  # (b): launches in flight at once
# The emulator answers in milliseconds, so the controller's default first poll of 2 s would dominate small
# batches; the default policy is measured too (PACKED_DEFAULT_POLL) to show what it costs.
FAST_POLL = {"fastest": 0.5, "slowest": 5.0, "backoff": 1.5}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Run the same batches against the local Cloud Run emulator as (a) a naive run_job loop, (a') the "
            f"official client in a pool of {PEER_THREADS} threads, (b) the "
            "controller with one execution per item, (c) the controller with packed executions, and the floor "
            "(the emulator alone); print calls, wall time, CPU, peak RSS and ratios, and check the targets."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes only (about 2 minutes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default: {DEFAULT_OUT})")
    parser.add_argument(
        "--naive-max", type=int, default=None, help="largest size the naive loop (a) runs; larger is extrapolated"
    )
    parser.add_argument("--per-item-max", type=int, default=None, help="largest size (b) runs; larger is extrapolated")
    parser.add_argument(
        "--threads-max", type=int, default=None, help="largest size the peer (a') runs; larger is extrapolated"
    )
    parser.add_argument("--max-run-seconds", type=float, default=1800.0, help="give up on one run after this")
    parser.add_argument("--only", default=None, help="run only cases whose 'SIZE:COMMAND' is in this comma list")
    parser.add_argument("--modes", default=None, help=f"run only these modes (comma list of {', '.join(MODES)})")
    parser.add_argument(
        "--merge-into",
        type=Path,
        default=None,
        help="re-measure the selected cases and replace them in this results file (each row records its commit)",
    )
    return parser


def _request(case: Case, url: str, report_dir: str) -> dict[str, Any]:
    spec = batch_spec(case.size, case.command, case.batch_id)
    base = {"url": url, "project": PROJECT, "region": REGION, "job": JOB, "spec": spec, "report_dir": report_dir}
    if case.mode == FLOOR:
        return {**base, "runner": "floor"}
    if case.mode == NAIVE:
        return {**base, "runner": "naive"}
    if case.mode == THREADS:
        return {**base, "runner": "threads", "threads": PEER_THREADS}
    mode = "per-item" if case.mode == PER_ITEM else "packed"
    poll = None if case.mode == PACKED_DEFAULT_POLL else FAST_POLL
    return {**base, "runner": "controller", "controller_mode": mode, "concurrency": CONCURRENCY, "poll": poll}


def run_case(case: Case, max_run_seconds: float) -> dict[str, Any]:
    """One measured run: a fresh emulator, the mode's client in a child process, the emulator's counts."""
    from controller.quota import Rates

    row: dict[str, Any] = {"size": case.size, "command": case.command, "mode": case.mode}
    work = tempfile.mkdtemp(prefix="fanout-bench-")
    try:
        with emulator(PARALLELISM) as url:
            reset_stats(url)
            request_path, result_path = Path(work, "request.json"), Path(work, "result.json")
            request_path.write_text(json.dumps(_request(case, url, str(Path(work, "reports")))))
            try:
                child = subprocess.run(
                    [sys.executable, "-m", "bench._controller", str(request_path), str(result_path)],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=max_run_seconds,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return {**row, "status": "timeout", "reason": f"over {max_run_seconds:.0f} s"}
            if child.returncode != 0 or not result_path.exists():
                tail = (child.stderr or child.stdout).strip().splitlines()[-5:]
                return {**row, "status": "error", "reason": " / ".join(tail)}
            after = stats(url)
            measured = json.loads(result_path.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    requests = {k: v for k, v in after["requests"].items() if k != "Emulator"}
    kinds = analysis.call_kinds(requests)
    row.update(measured)
    row.update(
        status="ok",
        requests=requests,
        calls=kinds,
        cloud_run_calls=kinds["run"] + kinds["read"] + kinds["write"],
        quota_bound_seconds=analysis.quota_bound_seconds(kinds, dataclasses.asdict(Rates())),
        cpu_ms_per_item=measured["cpu_seconds"] * 1000 / case.size,
        tasks_started=after.get("tasks_started"),
        attempts_started=after.get("attempts_started"),
        peak_running_tasks=after.get("peak_running_tasks"),
        expected_failed=failing_items(case.size),
    )
    return row


def _summary_line(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"{row['size']:>6} {row['command']:<6} {row['mode']:<22} {row.get('status')}: {row.get('reason', '')}"
    wall = row["wall_seconds"]
    return (
        f"{row['size']:>6} {row['command']:<6} {row['mode']:<22} wall {wall:8.1f} s  "
        f"calls {row['cloud_run_calls']:>6}  logs {row['calls']['logs']:>3}  cpu {row['cpu_seconds']:7.2f} s  "
        f"rss {row['rss_peak_bytes'] / 2**20:5.0f} MiB  ok/failed {row['succeeded']}/{row['failed']}"
    )


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether the checkout had uncommitted changes to the measured code."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": git("status", "--porcelain", "--", "controller", "jobs", "bench").splitlines(),
    }


def _merge(
    path: Path, fresh: list[dict[str, Any]], command: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, float]:
    """The rows of a saved run with the freshly measured cases replacing theirs, in the saved order; skipped
    rows go back to 'skipped' so they are extrapolated again from the current numbers."""
    saved = json.loads(path.read_text())
    by_case = {(r["size"], r["command"], r["mode"]): r for r in fresh}
    rows, skipped = [], []
    for old in saved["rows"]:
        key = (old["size"], old["command"], old["mode"])
        row = by_case.pop(key, None) or {"commit": saved.get("code", {}).get("commit"), **old}
        if row.get("status") == "extrapolated":
            row = {k: row[k] for k in ("size", "command", "mode", "reason", "commit")} | {"status": "skipped"}
        if row.get("status") == "skipped":
            skipped.append(row)
        rows.append(row)
    rows.extend(by_case.values())
    return rows, skipped, f"{saved['command']}; then {command}", float(saved["duration_seconds"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    matrix = QUICK if args.quick else FULL
    matrix = dataclasses.replace(
        matrix,
        naive_max=args.naive_max if args.naive_max is not None else matrix.naive_max,
        per_item_max=args.per_item_max if args.per_item_max is not None else matrix.per_item_max,
        threads_max=args.threads_max if args.threads_max is not None else matrix.threads_max,
    )
    only = set(args.only.split(",")) if args.only else None
    modes = set(args.modes.split(",")) if args.modes else None
    code = _code_version()
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "bench", *given])
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for case, skip in matrix.cases():
        if only is not None and f"{case.size}:{case.command}" not in only:
            continue
        if modes is not None and case.mode not in modes:
            continue
        if skip is not None:
            row = {"size": case.size, "command": case.command, "mode": case.mode, "status": "skipped", "reason": skip}
            skipped.append(row)
        else:
            row = {**run_case(case, args.max_run_seconds), "commit": code["commit"]}
        rows.append(row)
        print(_summary_line(row), file=sys.stderr, flush=True)
    from controller.quota import Rates

    rates = dataclasses.asdict(Rates())
    if args.merge_into is not None:
        rows, skipped, command, earlier_seconds = _merge(args.merge_into, rows, command)
        started -= earlier_seconds  # the duration reported is that of every run that made the rows
        args.out = args.merge_into
    analysis.extrapolate(rows, skipped, rates)
    analysis.add_ratios(rows)
    checks = analysis.targets(rows)

    result = {
        "schema": "fanout.bench/v1",
        "command": command,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.perf_counter() - started, 1),
        "code": code,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {
            "job": JOB,
            "parallelism": PARALLELISM,
            "per_item_concurrency": CONCURRENCY,
            "peer_threads": PEER_THREADS,
            "poll": FAST_POLL,
            "rates_for_quota_bound": rates,
            "controller_rates": "Rates.unlimited() (the emulator enforces no quota)",
            "modes": MODE_TITLES,
        },
        "rows": rows,
        "targets": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(analysis.results_table(rows))
    print()
    print(analysis.legend())
    print()
    print(analysis.targets_table(checks))
    print(f"\n{command}: {result['duration_seconds']:.0f} s; results in {args.out}")
    return 0
