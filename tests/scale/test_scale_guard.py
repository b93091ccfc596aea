"""Regression guard for the scale case (issue 14): one packed batch of 10,000 items on simulated tasks
(``bench.scale``: a fresh emulator, the controller in its own process).

Not a timed test: it asserts what does not depend on the machine's load. The calls that scale with the
batch are exact (one RunJob, one ListTasks page per 1,000 tasks, no log reads: every task succeeds), the
polls are bounded, and the controller's peak RSS grows by less than 3 KiB per item over its size after
imports (about 1.6 KiB measured). ``python -m bench.scale`` is the measured 100,000-item run.
"""

from __future__ import annotations

import pytest

from bench.scale import run_size

pytestmark = pytest.mark.slow

ITEMS = 10_000
MAX_RSS_GROWTH_BYTES = 3 * 1024 * ITEMS
MAX_POLLS = 60  # status reads while the execution runs; the watch backs off, so they grow slowly with time


def test_ten_thousand_items_cost_a_bounded_number_of_calls_and_memory() -> None:
    row = run_size(ITEMS, timeout=600.0)
    assert (row["succeeded"], row["failed"], row["launches"], row["problems"]) == (ITEMS, 0, 1, [])
    requests = row["requests"]
    assert requests.get("Jobs.RunJob") == 1
    assert requests.get("Tasks.ListTasks") == ITEMS // 1000  # 1,000 tasks per page
    assert row["log_calls"] == 0
    polls = requests.get("Executions.GetExecution", 0) + requests.get("Executions.ListExecutions", 0)
    assert polls <= MAX_POLLS, requests
    growth = row["rss_peak_bytes"] - row["rss_start_bytes"]
    assert growth < MAX_RSS_GROWTH_BYTES, f"peak RSS grew {growth / 2**20:.1f} MiB for {ITEMS:,} items"
    assert row["report_json_bytes"] > 0 and row["report_html_bytes"] > 0
