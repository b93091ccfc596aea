"""How fast report.html opens: synthetic reports of each size, rendered, then loaded in headless Chromium.

    .venv/bin/python -m bench.report_page                 # 10,000 and 100,000 items, 3 loads each
    .venv/bin/python -m bench.report_page --items 100000 --runs 5
    .venv/bin/python -m bench.report_page --items 1000000 --runs 3

The synthetic report (bench/synthetic_report.py) is heavier than a real one: every item has its own log link
and up to seven log lines. A report of more than ``PAGE_ITEMS`` items is made as a stored v2 report (its
items written to shards as they are made) and its page holds that many. Targets: a 100,000-item page ready
in under 2 s (issue 14), a 1,000,000-item batch's in under 3 s (issue 37).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.chromium import Browser, find_chromium, launched
from bench.synthetic_report import build_report
from controller.html_report import PAGE_ITEMS, render_html_chunks
from controller.store import LocalStore

TARGETS_S = {100_000: 2.0, 1_000_000: 3.0}


def target(items: int) -> float:
    """The load time a page of that many items must stay under: that of the nearest larger size named."""
    return next((seconds for size, seconds in sorted(TARGETS_S.items()) if items <= size), max(TARGETS_S.values()))


def measure(items: int, runs: int, folder: Path, browser: Browser) -> dict[str, float]:
    store = LocalStore(folder / f"store-{items}") if items > PAGE_ITEMS else None
    report = build_report(items, seed=2026, store=store)
    started = time.process_time()
    path = folder / f"report-{items}.html"
    with path.open("wb") as out:
        for chunk in render_html_chunks(report):
            out.write(chunk)
    render_cpu = time.process_time() - started
    loads, ready = [], []
    browser.open_page()
    browser.load(path)  # a first load warms the browser's caches; not counted
    for _ in range(runs):
        browser.open_page()
        loads.append(browser.load(path))
        ready.append(browser.evaluate("window.fanoutReport.readyMs") / 1000)
        problems = browser.problems()
        if problems:
            raise SystemExit(f"the page reported problems: {problems}")
    return {
        "items": items,
        "mb": path.stat().st_size / 1e6,
        "render_cpu_s": render_cpu,
        "load_s": statistics.median(loads),
        "load_max_s": max(loads),
        "ready_s": statistics.median(ready),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report_page", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000], help="report sizes")
    parser.add_argument("--runs", type=int, default=3, help="loads per size (the median is shown)")
    args = parser.parse_args(argv)
    executable = find_chromium()
    if executable is None:
        print("needs Debian's chromium: apt-get install chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, launched(executable, Path(tmp) / "profile") as browser:
        rows = [measure(n, args.runs, Path(tmp), browser) for n in args.items]
    print(f"{'items':>9} {'page MB':>8} {'render CPU':>11} {'ready (page)':>13} {'navigate→ready':>15} {'max':>6}  "
          "target")
    for row in rows:
        goal = target(int(row["items"]))
        verdict = "PASS" if row["load_s"] < goal else "FAIL"
        print(f"{row['items']:>9,} {row['mb']:>8.1f} {row['render_cpu_s']:>10.2f}s {row['ready_s']:>12.2f}s "
              f"{row['load_s']:>14.2f}s {row['load_max_s']:>5.2f}s  {verdict} < {goal:.0f} s "
              f"({row['load_s'] / goal:.2f}x)")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"{last['items'] / first['items']:.0f}x the items: {last['load_s'] / first['load_s']:.1f}x the load "
            f"time, {last['mb'] / first['mb']:.1f}x the page"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
