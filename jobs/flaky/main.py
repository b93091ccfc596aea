"""flaky: fails, times out or recovers on demand, so every path of the controller can be shown.

    flaky [--sleep SECONDS] [--exit-code N] [--fail-attempts K] [--message TEXT]

* ``--sleep S`` works for S seconds first (run it past the task timeout to see a timeout).
* ``--exit-code N`` ends with N. Alone, every attempt fails with it.
* ``--fail-attempts K`` fails only the first K attempts (by ``CLOUD_RUN_TASK_ATTEMPT``, which Cloud Run
  counts from 0), with ``--exit-code`` or 1, so the job's retries make it succeed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flaky", description="Fail, hang or recover on demand.")
    parser.add_argument("--sleep", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--exit-code", type=int, default=None, metavar="N")
    parser.add_argument("--fail-attempts", type=int, default=None, metavar="K")
    parser.add_argument("--message", default="", help="printed before exiting")
    args = parser.parse_args(argv)
    if args.sleep < 0:
        parser.error("--sleep must be >= 0")
    if args.exit_code is not None and not 0 <= args.exit_code <= 255:
        parser.error("--exit-code must be between 0 and 255")
    if args.fail_attempts is not None and args.fail_attempts < 0:
        parser.error("--fail-attempts must be >= 0")
    return args


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
    task = os.environ.get("CLOUD_RUN_TASK_INDEX", "0")
    print(f"flaky: task {task} attempt {attempt} starting", flush=True)
    if args.sleep:
        time.sleep(args.sleep)
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
