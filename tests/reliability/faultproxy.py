"""A TCP proxy on loopback that makes its upstream fail as a network or a server would: every connection
reset (an error burst), refused (the server is down: the proxy stops listening on its port, and listens
there again at recovery), or accepted and never answered (a hang).

Byte-level, so it carries any protocol (HTTP/1.1 keep-alive, resumable uploads, the Prefect API's
websockets) unchanged while it passes. Switching to a fault also breaks the connections already open: a
client with a keep-alive connection sees the fault on its next request, as it would with a dead server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from enum import StrEnum


class Mode(StrEnum):
    PASS = "pass"
    RESET = "reset"  # accept, then close at once: connection reset / no answer
    REFUSE = "refuse"  # not listening: connection refused, as from a server that is down
    HANG = "hang"  # accept, read, never answer


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = Mode.PASS
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._hung: set[socket.socket] = set()  # accepted while hanging: closed when the hang ends
        self._closing = False
        self._listener: socket.socket | None = None
        self.port = self._listen(0)
        self.url = f"http://127.0.0.1:{self.port}"

    def _listen(self, port: int) -> int:
        listener = socket.create_server(("127.0.0.1", port))  # SO_REUSEADDR: the same port again at once
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="fault-proxy", daemon=True).start()
        port_: int = listener.getsockname()[1]
        return port_

    def set(self, mode: Mode) -> None:
        """Switch mode; a switch away from passing breaks every connection open now."""
        if mode is Mode.REFUSE and self._listener is not None:
            _close(self._listener)
            self._listener = None
        elif mode is not Mode.REFUSE and self._listener is None:
            self._listen(self.port)
        with self._lock:
            self.mode = mode
            # Back to passing, what hung is let go: closed, so that its clients see an error and retry.
            broken = list(self._open) if mode is not Mode.PASS else list(self._hung)
            if mode is Mode.PASS:
                self._hung.clear()
        for sock in broken:
            _close(sock)

    def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            _close(self._listener)
        with self._lock:
            for sock in list(self._open):
                _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while not self._closing:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            mode = self.mode
            if mode is Mode.RESET:
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                _close(client)
                continue
            self._track(client)
            if mode is Mode.HANG:
                with self._lock:
                    self._hung.add(client)
                threading.Thread(target=_drain, args=(client,), daemon=True).start()
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        self._track(server)
        threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
        self._pipe(server, client)

    def _pipe(self, source: socket.socket, dest: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                dest.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                _close(sock)
                with self._lock:
                    self._open.discard(sock)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
