"""hello: greets each name it is given; the job that always succeeds quickly.

    hello [NAME...] [--sleep SECONDS] [--result]

The greeting word comes from ``GREETING`` (default "Hello"), so env overrides can be seen in the output.
With ``--result`` the greetings are also the item's result: a JSON list written to ``$FANOUT_RESULT_FILE``
when the fan-out controller sets it.

Exit codes: 0 greeted, 2 bad usage.
"""

from __future__ import annotations

import os
import sys
import time

USAGE = "usage: hello [NAME...] [--sleep SECONDS] [--result]"
# Cloud Run's longest task timeout (168 h): a longer pause could never end inside a task.
LONGEST_SLEEP = 168 * 3600


def usage_error(message: str) -> SystemExit:
    print(f"{USAGE}\nhello: error: {message}", file=sys.stderr)
    return SystemExit(2)


def parse(argv: list[str]) -> tuple[list[str], float, bool]:
    """(names, seconds to sleep, whether to store a result) from the command line, or SystemExit(2) with the
    usage. Parsed by hand: argparse (with the re, enum and gettext it imports) would triple the start-up of a
    job that starts once per task, thousands of times per execution."""
    names: list[str] = []
    sleep, result = 0.0, False
    rest = iter(argv)
    for arg in rest:
        option, has_value, value = arg.partition("=")
        if arg in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        if arg == "--result":
            result = True
        elif option == "--sleep":
            sleep = seconds(value if has_value else next(rest, None))
        elif arg == "--":
            names.extend(rest)
        elif arg.startswith("-") and arg != "-":
            raise usage_error(f"unrecognized argument: {arg}")
        else:
            names.append(arg)
    return names or ["world"], sleep, result


def seconds(value: str | None) -> float:
    if value is None:
        raise usage_error("--sleep needs a value")
    try:
        number = float(value)
    except ValueError:
        raise usage_error(f"--sleep: not a number: {value!r}") from None
    if not 0 <= number <= LONGEST_SLEEP:  # NaN fails both comparisons
        raise usage_error(f"--sleep must be between 0 and {LONGEST_SLEEP} seconds, not {value}")
    return number


def greetings(names: list[str], greeting: str) -> list[str]:
    return [f"{greeting}, {name}!" for name in names]


def main(argv: list[str] | None = None) -> int:
    names, sleep, result = parse(sys.argv[1:] if argv is None else argv)
    if sleep:
        time.sleep(sleep)
    task = os.environ.get("CLOUD_RUN_TASK_INDEX", "0")
    lines = greetings(names, os.environ.get("GREETING", "Hello"))
    for line in lines:
        print(f"[task {task}] {line}", flush=True)
    if result and (result_file := os.environ.get("FANOUT_RESULT_FILE")):
        import json  # only a result needs it (and the re it imports: ~20 ms of start-up)

        with open(result_file, "w", encoding="utf-8") as handle:
            json.dump(lines, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
