"""``python -m bench.plan`` on a small spec: it runs ``fanout plan``, times each step and judges on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _plan_bench(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.plan ARGS`` to its end (bounded: a hung run fails the test, it does not stall it)."""
    return subprocess.run(
        [sys.executable, "-m", "bench.plan", *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def test_small_plan_bench_writes_every_step_and_a_cpu_verdict(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    done = _plan_bench("--items", "50", "--out", str(out))
    assert done.returncode == 0, done.stderr
    row = json.loads(out.read_text())
    assert row["items"] == 50
    steps = ("plan_cpu_seconds", "imports_cpu_seconds", "yaml_cpu_seconds", "validate_cpu_seconds")
    assert all(row[step] >= 0 for step in (*steps, "plan_step_cpu_seconds", "baseline_yaml_cpu_seconds"))
    assert row["verdict"] == ("PASS" if row["plan_cpu_seconds"] < row["target_seconds"] else "FAIL")
    assert "s CPU (target < 3 s" in done.stdout


def test_profile_saves_stats_and_prints_the_costliest_functions(tmp_path: Path) -> None:
    stats = tmp_path / "plan.prof"
    done = _plan_bench("--items", "20", "--profile", str(stats))
    assert done.returncode == 0, done.stderr
    assert stats.stat().st_size > 0
    assert "tottime" in done.stdout and "function calls" in done.stdout
