"""The ``fanout`` console script: ``controller.cli.main``, then an exit without the interpreter's teardown.

After the report is printed, a normal exit spent 1-7 s here (more under load) tearing down the modules of
Prefect, pydantic and the Google clients, which nobody waits for. What an exit must still do is done
explicitly and in the interpreter's order: wait for the threads that keep a process alive (as
``threading`` does at shutdown), run the ``atexit`` handlers (Prefect flushes its log and event workers
there; ``logging`` flushes its handlers), flush stdout and stderr. Then ``os._exit``.

Only a normal return takes this path; ``SystemExit`` (``--help``, usage errors) and exceptions leave the
usual way.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` after what a normal exit does before tearing the interpreter down."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> NoReturn:
    from controller.cli import main as cli_main

    exit_now(cli_main())


if __name__ == "__main__":
    main()
