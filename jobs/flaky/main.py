"""flaky: fails, times out or recovers on demand, so every path of the controller can be shown.

    flaky [--sleep SECONDS] [--exit-code N] [--fail-attempts K] [--fail-runs K] [--message TEXT]

* ``--sleep S`` works for S seconds first (run it past the task timeout to see a timeout).
* ``--exit-code N`` ends with N. Alone, every attempt fails with it.
* ``--fail-attempts K`` fails only the first K attempts (by ``CLOUD_RUN_TASK_ATTEMPT``, which Cloud Run
  counts from 0), with ``--exit-code`` or 1, so the job's retries make it succeed.
* ``--fail-runs K`` fails every attempt of the first K controller-side attempts (by ``FANOUT_ATTEMPT``, from
  1, absent on the first), with ``--exit-code`` or 1, so only the controller's retry policy makes it succeed.
"""

from __future__ import annotations

import os
import sys
import time

USAGE = "usage: flaky [--sleep SECONDS] [--exit-code N] [--fail-attempts K] [--fail-runs K] [--message TEXT]"
# Cloud Run's longest task timeout (168 h): a longer pause could never end inside a task.
LONGEST_SLEEP = 168 * 3600


class Args:
    def __init__(self) -> None:
        self.sleep = 0.0
        self.exit_code: int | None = None
        self.fail_attempts: int | None = None
        self.fail_runs: int | None = None
        self.message = ""


def usage_error(message: str) -> SystemExit:
    print(f"{USAGE}\nflaky: error: {message}", file=sys.stderr)
    return SystemExit(2)


def parse(argv: list[str]) -> Args:
    """The command line, or SystemExit(2) with the usage. Parsed by hand: argparse (with the re, enum and
    gettext it imports) would triple the start-up of a job that starts once per task."""
    args = Args()
    rest = iter(argv)
    for arg in rest:
        if arg in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        option, has_value, value = arg.partition("=")
        if option not in ("--sleep", "--exit-code", "--fail-attempts", "--fail-runs", "--message"):
            raise usage_error(f"unrecognized argument: {arg}")
        text = value if has_value else next(rest, None)
        if text is None:
            raise usage_error(f"{option} needs a value")
        if option == "--message":
            args.message = text
        elif option == "--sleep":
            args.sleep = number(option, text, float, 0, LONGEST_SLEEP)
        elif option == "--exit-code":
            args.exit_code = int(number(option, text, int, 0, 255))
        elif option == "--fail-runs":
            args.fail_runs = int(number(option, text, int, 0, 1_000_000))
        else:
            args.fail_attempts = int(number(option, text, int, 0, 1_000_000))
    return args


def number(option: str, text: str, kind: type[int] | type[float], lowest: int, highest: int) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise usage_error(f"{option}: not {'an integer' if kind is int else 'a number'}: {text!r}") from None
    if not lowest <= value <= highest:  # NaN fails both comparisons
        raise usage_error(f"{option} must be between {lowest} and {highest}, not {text}")
    return value


def exit_code_for(attempt: int, exit_code: int | None, fail_attempts: int | None) -> int:
    """The exit code of this attempt."""
    if fail_attempts is None:
        return exit_code or 0
    if attempt < fail_attempts:
        return exit_code or 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    attempt = int(os.environ.get("CLOUD_RUN_TASK_ATTEMPT", "0") or 0)
    run = int(os.environ.get("FANOUT_ATTEMPT", "1") or 1)
    task = os.environ.get("CLOUD_RUN_TASK_INDEX", "0")
    print(f"flaky: task {task} attempt {attempt} starting", flush=True)
    if args.sleep:
        time.sleep(args.sleep)
    if args.fail_runs is not None:
        code = (args.exit_code or 1) if run <= args.fail_runs else 0
    else:
        code = exit_code_for(attempt, args.exit_code, args.fail_attempts)
    if args.message:
        print(args.message, flush=True)
    if code:
        print(f"flaky: attempt {attempt} failing with exit code {code}", file=sys.stderr, flush=True)
    else:
        print(f"flaky: attempt {attempt} succeeded", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
