"""Regression guard for the scale case (issue 14): one packed batch of 10,000 items on simulated tasks
(``bench.scale``: a fresh emulator, the controller in its own process).

Not a timed test: it asserts what does not depend on the machine's load. The calls that scale with the
batch are exact (one RunJob, one ListTasks page per 1,000 tasks, no log reads: every task succeeds), the
polls are bounded, and the controller's peak RSS grows by less than 1 KiB per item from 10,000 items to
20,000 (issue 37: the batch's per-item state is held compactly and its report is written a shard at a time,
so what grows with the batch is the validated items and their task columns; the
shard being written or read is the same 10,000 items at both sizes). ``python -m bench.scale`` is the
measured 100,000 and 1,000,000-item run.
"""

from __future__ import annotations

import pytest

from bench.scale import run_size

pytestmark = pytest.mark.slow

ITEMS = 10_000
MAX_RSS_BYTES_PER_ITEM = 1024
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
    assert 0 < row["report_json_bytes"] < 64 * 1024  # the summary and launches: the items lie in shards
    assert row["report_html_bytes"] > 0
    double = run_size(2 * ITEMS, timeout=600.0)
    assert (double["succeeded"], double["launches"]) == (2 * ITEMS, 2)
    per_item = (double["rss_peak_bytes"] - row["rss_peak_bytes"]) / ITEMS
    assert per_item < MAX_RSS_BYTES_PER_ITEM, f"peak RSS grew {per_item:,.0f} B per item, {ITEMS:,} to {2 * ITEMS:,}"
