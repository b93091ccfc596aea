"""The scale case (issue 14): one batch of N items of the packable ``hello`` job, packed (10,000 tasks per
execution), on an emulator with simulated tasks (no process starts: the 2-core machine cannot run 100,000).

Each size runs in a fresh emulator with the controller in a child process (``bench._controller``), so the
controller's CPU and peak RSS are its own. ``python -m bench.scale [--sizes 10000,100000,1000000]``.
Targets (issues 14 and 37): at most 300 Cloud Run calls and 30 entries:list calls at 100,000 items and 1,500
Cloud Run calls at 1,000,000, CPU under 0.3 ms per item, peak RSS growth under 1 KiB per item from the
smallest size to 100,000 (and to the largest), a 1,000,000-item run peaking under 1.5 GiB. Each row also
says how long Cloud Run's default quotas alone would make the same calls take on Google Cloud.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import analysis
from bench.cli import FAST_POLL
from bench.emulator import PROJECT, REGION, REPO, emulator, reset_stats, stats
from bench.workload import JOB
from controller.quota import Rates

MAX_CLOUD_RUN_CALLS = {100_000: 300, 1_000_000: 1_500}
MAX_PEAK_RSS_BYTES = {1_000_000: int(1.5 * 2**30)}
MAX_LOG_CALLS = 30
MAX_CPU_MS_PER_ITEM = 0.3
MAX_RSS_BYTES_PER_ITEM = 1024
RUNNING_TASKS = 1000  # the emulator's cap: simulated tasks cost no process, so a large cap keeps runs short


def spec(size: int) -> dict[str, Any]:
    return {
        "batch_id": f"scale-{size}",
        "items": [{"key": f"i{i:06d}", "job": JOB, "args": [f"n{i}"]} for i in range(size)],
    }


def run_size(
    size: int, *, field_masks: bool = True, timeout: float = 1800.0, profile: Path | None = None
) -> dict[str, Any]:
    """One measured packed run of ``size`` items on simulated tasks: calls, CPU, peak RSS, report size."""
    work = Path(tempfile.mkdtemp(prefix="fanout-scale-"))
    try:
        with emulator(RUNNING_TASKS, simulate=True) as url:
            reset_stats(url)
            request = {
                "runner": "controller",
                "url": url,
                "project": PROJECT,
                "region": REGION,
                "spec": spec(size),
                "report_dir": str(work / "reports"),
                "controller_mode": "packed",
                "concurrency": 32,
                "poll": FAST_POLL,
                "field_masks": field_masks,
                "profile": str(profile) if profile else None,
            }
            (work / "request.json").write_text(json.dumps(request))
            child = subprocess.run(
                [sys.executable, "-m", "bench._controller", str(work / "request.json"), str(work / "result.json")],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if child.returncode != 0:
                raise RuntimeError(f"the controller failed at {size} items: {child.stderr.strip()[-2000:]}")
            after = stats(url)
        measured = json.loads((work / "result.json").read_text())
        reports = list((work / "reports").rglob("report.json"))
        report_bytes = sum(p.stat().st_size for p in reports)
        items_bytes = sum(p.stat().st_size for p in (work / "reports").rglob("items/*.jsonl"))
        html_bytes = sum(p.stat().st_size for p in (work / "reports").rglob("report.html"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    requests = {k: v for k, v in after["requests"].items() if k != "Emulator"}
    kinds = analysis.call_kinds(requests)
    defaults = Rates()
    quota = {"run": defaults.run, "write": defaults.write, "read": defaults.read, "logs": defaults.logs}
    return {
        "size": size,
        "field_masks": field_masks,
        **measured,
        "requests": requests,
        "cloud_run_calls": kinds["run"] + kinds["read"] + kinds["write"],
        "log_calls": kinds.get("logs", 0),
        "cpu_ms_per_item": measured["cpu_seconds"] * 1000 / size,
        "report_json_bytes": report_bytes,
        "report_items_bytes": items_bytes,
        "report_html_bytes": html_bytes,
        # The least wall time Cloud Run's and Logging's default per-minute quotas (Rates()) would impose on
        # these calls on Google Cloud, whatever the tasks take: the emulator has no quota.
        "quota_bound_seconds": analysis.quota_bound_seconds(kinds, quota),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma list of batch sizes (default: %(default)s)")
    parser.add_argument("--masks-off", action="store_true", help="also run the smallest size without field masks")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/scale.json", help="JSON results")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="run the controller under cProfile: DIR/scale-SIZE.prof (slower)"
    )
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    runs = [(size, True) for size in sizes] + ([(sizes[0], False)] if args.masks_off else [])
    rows = []
    for size, masks in runs:  # each row printed as it ends: a million items take a while
        profile = args.profile / f"scale-{size}.prof" if args.profile and masks else None
        row = run_size(size, field_masks=masks, profile=profile)
        rows.append(row)
        print(
            f"{row['size']:>9,} items masks={'on' if row['field_masks'] else 'off'}: {row['wall_seconds']:.1f} s, "
            f"{row['cloud_run_calls']} Cloud Run calls, {row['log_calls']} entries:list, "
            f"{row['cpu_ms_per_item']:.3f} ms CPU/item, peak RSS {row['rss_peak_bytes'] / 2**20:.0f} MiB, "
            f"report.json {row['report_json_bytes'] / 2**10:.1f} KiB, "
            f"item shards {row['report_items_bytes'] / 2**20:.1f} MiB, "
            f"report.html {row['report_html_bytes'] / 2**20:.1f} MiB, "
            f"default quotas alone: {row['quota_bound_seconds']:.0f} s",
            flush=True,
        )
    verdicts = targets([row for row in rows if row["field_masks"]])
    for line in verdicts:
        print(line)
    args.out.write_text(json.dumps({"rows": rows, "targets": verdicts}, indent=1))
    return 0


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """PASS/FAIL of issues 14 and 37's targets (field masks on): calls at 100,000 and 1,000,000 items, CPU
    per item at the largest size, peak RSS growth per item from the smallest size to 100,000 and to the
    largest, and the peak RSS of a 1,000,000-item run."""

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    by_size = {row["size"]: row for row in rows}
    small, large = rows[0], rows[-1]
    lines = []
    for size, most in MAX_CLOUD_RUN_CALLS.items():
        if (row := by_size.get(size)) is not None:
            calls = row["cloud_run_calls"]
            lines.append(f"{size:,} items: Cloud Run calls {calls} (<= {most:,}) {verdict(calls <= most)}")
    if (row := by_size.get(100_000)) is not None:
        logs = row["log_calls"]
        lines.append(f"100,000 items: entries:list {logs} (<= {MAX_LOG_CALLS}) {verdict(logs <= MAX_LOG_CALLS)}")
    lines.append(
        f"{large['size']:,} items: CPU {large['cpu_ms_per_item']:.3f} ms/item (< {MAX_CPU_MS_PER_ITEM}) "
        f"{verdict(large['cpu_ms_per_item'] < MAX_CPU_MS_PER_ITEM)}"
    )
    for row in {id(r): r for r in (by_size.get(100_000), large) if r is not None}.values():
        if row["size"] > small["size"]:
            growth = (row["rss_peak_bytes"] - small["rss_peak_bytes"]) / (row["size"] - small["size"])
            lines.append(
                f"peak RSS growth {small['size']:,} -> {row['size']:,}: {growth:,.0f} B/item "
                f"(< {MAX_RSS_BYTES_PER_ITEM}) {verdict(growth < MAX_RSS_BYTES_PER_ITEM)}"
            )
    for size, most in MAX_PEAK_RSS_BYTES.items():
        if (row := by_size.get(size)) is not None:
            peak = row["rss_peak_bytes"]
            lines.append(
                f"{size:,} items: peak RSS {peak / 2**30:.2f} GiB (< {most / 2**30:.1f}) {verdict(peak < most)}"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
