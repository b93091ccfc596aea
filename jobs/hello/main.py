"""hello: greets each name it is given; the job that always succeeds quickly.

    hello [NAME...] [--sleep SECONDS] [--result]

The greeting word comes from ``GREETING`` (default "Hello"), so env overrides can be seen in the output.
With ``--result`` the greetings are also the item's result: a JSON list written to ``$FANOUT_RESULT_FILE``
when the fan-out controller sets it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hello", description="Print a greeting for each name.")
    parser.add_argument("names", nargs="*", default=["world"], metavar="NAME")
    parser.add_argument("--sleep", type=float, default=0.0, metavar="SECONDS", help="pause before greeting")
    parser.add_argument("--result", action="store_true", help="store the greetings as the item's result")
    args = parser.parse_args(argv)
    if args.sleep < 0:
        parser.error("--sleep must be >= 0")
    return args


def greetings(names: list[str], greeting: str) -> list[str]:
    return [f"{greeting}, {name}!" for name in names]


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.sleep:
        time.sleep(args.sleep)
    task = os.environ.get("CLOUD_RUN_TASK_INDEX", "0")
    lines = greetings(args.names, os.environ.get("GREETING", "Hello"))
    for line in lines:
        print(f"[task {task}] {line}", flush=True)
    if args.result and (result_file := os.environ.get("FANOUT_RESULT_FILE")):
        with open(result_file, "w", encoding="utf-8") as handle:
            json.dump(lines, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
