"""``python -m bench.render [RESULTS.json]``: the tables of a saved run, as Markdown (for docs/benchmarks.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import analysis
from bench.cli import DEFAULT_OUT


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_OUT
    result = json.loads(path.read_text())
    machine, code = result["machine"], result.get("code", {})
    print(f"`{result['command']}` (last at commit {code.get('commit', '?')[:12]}), finished {result['finished_at']},")
    print(
        f"{result['duration_seconds'] / 60:.0f} min on {machine['cpus']} CPUs, Python {machine['python']}, "
        f"load average at the end {', '.join(f'{x:.1f}' for x in machine['load_average_at_end'])}.\n"
    )
    commits: dict[str, int] = {}
    for row in result["rows"]:
        if row.get("status") == "ok":
            commits[str(row.get("commit", "?"))[:12]] = commits.get(str(row.get("commit", "?"))[:12], 0) + 1
    print("Rows measured at: " + ", ".join(f"{c} ({n} runs)" for c, n in commits.items()) + ".\n")
    print(analysis.results_table(result["rows"]))
    print()
    print(analysis.targets_table(result["targets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
