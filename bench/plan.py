"""The plan case (issue 14): ``fanout plan`` of a 100,000-item YAML spec, target under 3 s.

``python -m bench.plan [--items N]`` writes an N-item YAML spec of the ``hello`` job, runs ``fanout plan`` on it
in a child process (wall time and the child's CPU, imports included), and times the YAML step alone both
ways in this process: the spec loader (``controller.spec_yaml``, libyaml's events straight to data) and the
baseline, PyYAML's own object building (``yaml.load`` with the C ``CSafeLoader``: the node graph, then
Python constructors), which is what the spec loader did before.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.emulator import REPO
from bench.workload import JOB
from controller import spec_yaml

MAX_PLAN_SECONDS = 3.0
_PYYAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def spec_text(items: int) -> str:
    """An N-item block-style YAML spec, as a user or a generator script writes one."""
    lines = ["batch_id: plan-bench", "items:"]
    for i in range(items):
        lines += [f"  - key: i{i:06d}", f"    job: {JOB}", "    args:", f"      - n{i}"]
    return "\n".join(lines) + "\n"


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _timed(load: Any, text: str) -> tuple[float, Any]:
    start = _cpu(resource.RUSAGE_SELF)
    data = load(text)
    return _cpu(resource.RUSAGE_SELF) - start, data


def measure(items: int) -> dict[str, Any]:
    text = spec_text(items)
    with tempfile.TemporaryDirectory(prefix="fanout-plan-") as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(text)
        cpu_before, start = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
        child = subprocess.run(
            [str(Path(sys.executable).with_name("fanout")), "plan", str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu_before
    if child.returncode != 0:
        raise RuntimeError(f"fanout plan failed: {child.stderr.strip()[-2000:]}")
    loader_cpu, data = _timed(spec_yaml.load, text)
    baseline_cpu, baseline = _timed(lambda t: yaml.load(t, Loader=_PYYAML_LOADER), text)
    if data != baseline:
        raise RuntimeError("the spec loader and PyYAML read the spec differently")
    return {
        "items": items,
        "spec_bytes": len(text.encode()),
        "plan_wall_seconds": wall,
        "plan_cpu_seconds": cpu,
        "yaml_cpu_seconds": loader_cpu,
        "baseline_yaml_cpu_seconds": baseline_cpu,
        "target_seconds": MAX_PLAN_SECONDS,
        "verdict": "PASS" if wall < MAX_PLAN_SECONDS else "FAIL",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items in the spec (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/plan.json", help="JSON results")
    args = parser.parse_args(argv)
    row = measure(args.items)
    print(
        f"fanout plan, {row['items']:,} items ({row['spec_bytes'] / 2**20:.1f} MiB YAML): "
        f"{row['plan_wall_seconds']:.2f} s wall, {row['plan_cpu_seconds']:.2f} s CPU "
        f"(target < {MAX_PLAN_SECONDS:.0f} s: {row['verdict']}); YAML step {row['yaml_cpu_seconds']:.2f} s CPU, "
        f"baseline PyYAML CSafeLoader {row['baseline_yaml_cpu_seconds']:.2f} s CPU"
    )
    args.out.write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
