"""The plan case (issue 14): ``fanout plan`` of a 100,000-item YAML spec, target under 3 s of CPU.

``python -m bench.plan [--items N]`` writes an N-item YAML spec of the ``hello`` job, runs ``fanout plan`` on it
in a child process (its CPU, imports included, and its wall time), times the interpreter's imports alone in
another child, and times each step after them in this process: the YAML step both ways (the spec loader,
``controller.spec_yaml``: libyaml's events straight to data; and the baseline, PyYAML's own object building,
``yaml.load`` with the C ``CSafeLoader``, which is what the spec loader did before), validation (schema,
defaults, catalog, digest) and planning. The verdict is on the command's CPU: the machine is shared, and its
wall time says more about the other load than about ``fanout plan``. ``--profile FILE`` runs the command
under cProfile instead, saves the stats there and prints where the time goes.
"""

from __future__ import annotations

import argparse
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.emulator import REPO
from bench.workload import JOB
from controller import spec, spec_yaml
from controller.catalog import Catalog
from controller.gc_pause import gc_paused
from controller.plan import plan

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


def _timed(step: Callable[[], Any]) -> tuple[float, Any]:
    """``step``'s result and its CPU, with the collector paused as ``fanout plan`` pauses it."""
    with gc_paused():
        start = _cpu(resource.RUSAGE_SELF)
        out = step()
        return _cpu(resource.RUSAGE_SELF) - start, out


def _child(argv: list[str]) -> tuple[float, float]:
    """CPU and wall seconds of a child process; raises if it fails."""
    cpu_before, start = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    child = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {child.stderr.strip()[-2000:]}")
    return _cpu(resource.RUSAGE_CHILDREN) - cpu_before, wall


def _steps(text: str) -> dict[str, float]:
    """CPU of each step after the imports, in this process."""
    catalog = Catalog.from_jobs_dir()
    yaml_cpu, data = _timed(lambda: spec_yaml.load(text))
    validate_cpu, batch = _timed(lambda: spec.validate(data, catalog, text=text, source="bench"))
    plan_cpu, _ = _timed(lambda: plan(batch, catalog, manifest_root="<report-to>/manifests"))
    baseline_cpu, baseline = _timed(lambda: yaml.load(text, Loader=_PYYAML_LOADER))
    if data != baseline:
        raise RuntimeError("the spec loader and PyYAML read the spec differently")
    return {
        "yaml_cpu_seconds": yaml_cpu,
        "validate_cpu_seconds": validate_cpu,
        "plan_step_cpu_seconds": plan_cpu,
        "baseline_yaml_cpu_seconds": baseline_cpu,
    }


def measure(items: int) -> dict[str, Any]:
    text = spec_text(items)
    with tempfile.TemporaryDirectory(prefix="fanout-plan-") as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(text)
        cpu, wall = _child([str(Path(sys.executable).with_name("fanout")), "plan", str(path)])
    imports_cpu, _ = _child([sys.executable, "-c", "import controller.cli"])
    return {
        "items": items,
        "spec_bytes": len(text.encode()),
        "plan_wall_seconds": wall,
        "plan_cpu_seconds": cpu,
        "imports_cpu_seconds": imports_cpu,
        **_steps(text),
        "target_seconds": MAX_PLAN_SECONDS,
        "verdict": "PASS" if cpu < MAX_PLAN_SECONDS else "FAIL",
    }


def profile(items: int, out: Path, top: int = 25) -> None:
    """Run ``fanout plan`` under cProfile in a child, save the stats to ``out`` and print the costliest."""
    with tempfile.TemporaryDirectory(prefix="fanout-plan-") as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(spec_text(items))
        _child([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "controller.cli", "plan", str(path)])
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items in the spec (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/plan.json", help="JSON results")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="profile the command instead; stats to FILE")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.items, args.profile)
        return 0
    row = measure(args.items)
    print(
        f"fanout plan, {row['items']:,} items ({row['spec_bytes'] / 2**20:.1f} MiB YAML): "
        f"{row['plan_cpu_seconds']:.2f} s CPU (target < {MAX_PLAN_SECONDS:.0f} s: {row['verdict']}), "
        f"{row['plan_wall_seconds']:.2f} s wall; imports {row['imports_cpu_seconds']:.2f} s, YAML step "
        f"{row['yaml_cpu_seconds']:.2f} s (baseline PyYAML CSafeLoader {row['baseline_yaml_cpu_seconds']:.2f} s), "
        f"validation {row['validate_cpu_seconds']:.2f} s, plan {row['plan_step_cpu_seconds']:.2f} s CPU"
    )
    args.out.write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
