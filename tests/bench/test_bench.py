"""The benchmark's command line and its pure parts (no timing: the benchmark itself is not a test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.analysis import call_kinds, quota_bound_seconds, targets
from bench.workload import FULL, NAIVE, PACKED, QUICK, batch_spec, failing_items

REPO = Path(__file__).resolve().parents[2]


def test_help_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout


def test_every_mode_gets_the_same_valid_batch(catalog) -> None:  # type: ignore[no-untyped-def]
    from controller.spec import load_batch

    spec = batch_spec(200, "sleep1", "bench-x")
    batch = load_batch(spec, catalog)
    assert len(batch.items) == 200
    assert failing_items(200) == 2
    assert sum(1 for item in batch.items if item.args == ("--sleep", "-1")) == 2


def test_quota_bound_counts_full_windows() -> None:
    rates = {"run": 180, "write": 180, "read": 1000, "logs": 60}
    assert quota_bound_seconds({"run": 180, "read": 0}, rates) == 0.0
    assert quota_bound_seconds({"run": 181}, rates) == 60.0
    assert quota_bound_seconds({"run": 10_000, "read": 20_000}, rates) == 55 * 60.0


def test_call_kinds() -> None:
    kinds = call_kinds(
        {"Jobs.RunJob": 2, "Executions.GetExecution": 3, "Jobs.DeleteJob": 1, "Logging.ListLogEntries": 4}
    )
    assert kinds == {"run": 2, "read": 3, "write": 1, "logs": 4}


def test_slow_baselines_are_skipped_above_their_limits() -> None:
    for matrix in (FULL, QUICK):
        for case, skip in matrix.cases():
            if case.mode == NAIVE:
                assert (skip is None) == (case.size <= matrix.naive_max)
            if case.mode == PACKED:
                assert skip is None


def test_targets_without_data_are_not_applicable() -> None:
    assert {check["result"] for check in targets([])} == {"n/a"}


def test_the_results_case_passes_only_when_every_succeeded_item_brought_its_result() -> None:
    measured = {"status": "ok", "calls": {"run": 1, "logs": 1}, "cloud_run_calls": 15, "wall_seconds": 2.0}
    measured |= {"cpu_seconds": 0.5, "rss_peak_bytes": 2**27, "succeeded": 99}
    noop = {"size": 100, "command": "noop", "mode": PACKED} | measured
    every = {"size": 100, "command": "results", "mode": PACKED, "results": 99} | measured

    def check(rows: list[dict[str, object]]) -> dict[str, str]:
        found = [c for c in targets(rows) if c["target"].startswith("packed with a result from every item")]
        assert len(found) == 1
        return found[0]

    assert check([noop, every])["result"] == "PASS"
    assert "beside the no-op case" in check([noop, every])["detail"]
    assert check([noop, every | {"results": 98}])["result"] == "FAIL"
    assert check([noop])["result"] == "n/a"
