"""A request that never left (the connection was refused: the server is down) is not ambiguous: RunJob may be
sent again without looking for the launch first. A connection dropped after it was made is ambiguous."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from controller.retry import is_ambiguous, is_retryable, never_sent


def _error(url: str) -> requests.ConnectionError:
    with pytest.raises(requests.ConnectionError) as caught:
        requests.post(url, json={}, timeout=5)
    return caught.value


def test_a_refused_connection_was_never_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    error = _error(f"http://127.0.0.1:{port}/v2/jobs/x:run")
    assert never_sent(error) and is_retryable(error) and not is_ambiguous(error)


def test_a_connection_dropped_after_it_was_made_is_ambiguous() -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def drop() -> None:
        client, _ = server.accept()
        client.recv(65536)  # the request arrived: the server may have acted on it
        client.close()

    threading.Thread(target=drop, daemon=True).start()
    try:
        error = _error(f"http://127.0.0.1:{server.getsockname()[1]}/v2/jobs/x:run")
    finally:
        server.close()
    assert not never_sent(error) and is_ambiguous(error)
