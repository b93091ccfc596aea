"""The ``fanout`` console script: ``controller.cli.main``, then an exit without the interpreter's teardown.

A ``fanout run`` goes first to the warm host (``controller.warm``), a process that has imported everything
already; this process then only waits for its exit code. Without one, it runs here.

After the report is printed, a normal exit spent 1-7 s here (more under load) tearing down the modules of
Prefect, pydantic and the Google clients, which nobody waits for. What an exit must still do is done
explicitly (``controller.clean_exit.settle``, which the warm host's children run too). Then ``os._exit``.

Only a normal return takes this path; ``SystemExit`` (``--help``, usage errors) and exceptions leave the
usual way.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from controller.clean_exit import settle


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` after what a normal exit does before tearing the interpreter down."""
    settle()
    os._exit(code)


def main() -> NoReturn:
    from controller import warm  # standard library only: whether the command runs in the warm host

    try:
        code = warm.run(sys.argv[1:])
    except warm.WarmSettingError as exc:
        print(f"fanout: error: {exc}", file=sys.stderr)
        code = 2
    if code is not None:
        exit_now(code)
    from controller.cli import main as cli_main

    exit_now(cli_main())


if __name__ == "__main__":
    main()
