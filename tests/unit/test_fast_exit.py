"""``fanout`` ends without the interpreter's teardown, but only after everything a normal exit does first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = """
import atexit, sys, threading, time
from pathlib import Path
from controller.fast_exit import exit_now

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late():
    time.sleep(0.3)
    (out / "thread").write_text("finished")
threading.Thread(target=late).start()
sys.stdout.write("buffered, not yet flushed")
exit_now(3)
"""


def test_exit_waits_for_threads_runs_exit_handlers_flushes_and_keeps_the_code(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, not yet flushed"
    assert (tmp_path / "thread").read_text() == "finished"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_the_console_script_is_the_fast_exit() -> None:
    script = Path(sys.executable).with_name("fanout").read_text()
    assert "from controller.fast_exit import main" in script
