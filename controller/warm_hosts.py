"""The warm hosts as their state dir holds them (``controller.warm``): the sockets they listen on, how a
socket's path becomes an address, and stopping them all. The local Prefect server stops them with itself
(``controller.prefect_server.stop``, ``fanout server stop``) through this module, so it never imports the
warm host, which runs the CLI, which starts the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

REQUEST_TIMEOUT = 5.0  # how long the host waits for a connected command to send its request
STOP_TIMEOUT = 30.0
MAX_SOCKET_PATH = 100  # sun_path holds 104-108 bytes


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for the socket at ``path``: the path itself, or where it is too long for a socket address
    (104-108 bytes), the same file through a descriptor of its folder (``/proc/self/fd``, Linux)."""
    if len(str(path)) <= MAX_SOCKET_PATH or not os.path.isdir("/proc/self/fd"):
        yield str(path)
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def hosts(directory: Path) -> Iterator[Path]:
    """The sockets of the warm hosts in the state dir."""
    with contextlib.suppress(OSError):
        yield from sorted(directory.glob("warm-*.sock"))


def stop_all(directory: Path, timeout: float = STOP_TIMEOUT) -> int:
    """Stop every warm host in the state dir (commands running in them go on); returns how many stopped."""
    stopped = 0
    for path in hosts(directory):
        lock = path.with_suffix(".lock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(REQUEST_TIMEOUT)
            try:
                with socket_address(path) as address:
                    sock.connect(address)
                socket.send_fds(sock, [b"\0"], [])
                sock.sendall(b'{"op": "stop"}\n')
                sock.makefile("rb").readline()
            except OSError:
                path.unlink(missing_ok=True)  # nobody listens: a dead host's
                continue
        _wait_unlocked(lock, timeout)
        stopped += 1
    return stopped


def _wait_unlocked(lock: Path, timeout: float) -> None:
    """Until the host holding ``lock`` has exited (its lock is free)."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError), lock.open("a") as handle:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.05)
