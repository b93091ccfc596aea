"""The whole fault matrix (``tests/reliability/faults.py``), one ``fanout run`` per cell; prints the table
that docs/reliability.md shows.

    .venv/bin/python -m bench.faults [--only DEPENDENCY] [--cell DEPENDENCY/PHASE/KIND] [--quick]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.faults import DEPENDENCIES, QUICK, Matrix, all_cells, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=DEPENDENCIES, help="the cells of one dependency")
    parser.add_argument("--quick", action="store_true", help="the subset make test runs")
    parser.add_argument("--cell", action="append", help="only this cell (dependency/phase/kind); repeatable")
    args = parser.parse_args(argv)
    # SIGTERM ends the run through the Matrix's exit, which stops the services it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cells = QUICK if args.quick else all_cells()
    if args.only:
        cells = [cell for cell in cells if cell.dependency == args.only]
    if args.cell:
        cells = [cell for cell in cells if cell.name in args.cell]
    started = time.monotonic()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="fanout-faults-") as folder, Matrix(Path(folder)) as services:
        for cell in cells:
            outcome = services.run(cell)
            outcomes.append(outcome)
            print(f"{cell.name}: {'held' if outcome.held else 'BROKE'} ({outcome.seconds:.0f}s)", file=sys.stderr)
    print(table(outcomes))
    print(f"\n{len(cells)} cells in {time.monotonic() - started:.0f}s")
    return 0 if all(o.held for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
