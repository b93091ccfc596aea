"""A signal that ``fanout run`` takes is never raised where it lands: it once landed inside httpcore's
connection-pool lock during a Prefect API call, left the lock held, and the flow's next API call (setting its
Crashed state) waited for it forever. The handler records the signal; the batch's watch raises it between
polls."""

from __future__ import annotations

import os
import signal
import threading

from controller.batch import interrupts
from controller.cli import _interrupting_signals


def test_a_signal_inside_a_lock_leaves_the_lock_free_and_is_handed_to_the_watch() -> None:
    lock = threading.Lock()
    signalled: list[int] = []
    sigterm = signal.getsignal(signal.SIGTERM)  # the context leaves SIGTERM's handler set: this test puts it back
    with _interrupting_signals(signalled):
        with lock:  # as a client holds its connection pool while the signal lands
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handlers run at the next bytecodes, here rather than after the lock
                pass
        assert lock.acquire(blocking=False)
        lock.release()
        assert signalled == [signal.SIGINT, signal.SIGTERM]
        assert interrupts.pending == ["Ctrl-C (SIGINT)", "SIGTERM"]
    assert not interrupts.pending and not interrupts.taken  # the next run in this process starts without them
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGTERM, sigterm)
