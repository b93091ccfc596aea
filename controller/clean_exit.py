"""What a normal exit does before the interpreter tears itself down, done explicitly and in the interpreter's
order: wait for the threads that keep a process alive (as ``threading`` does at shutdown), run the ``atexit``
handlers (Prefect flushes its log and event workers there; ``logging`` flushes its handlers), flush stdout and
stderr. The ``fanout`` console script (controller.fast_exit) and the warm host's children (controller.warm)
run it, then end without the teardown nobody waits for.
"""

from __future__ import annotations

import atexit
import sys
import threading


def settle() -> None:
    """What a normal exit does before tearing the interpreter down."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
