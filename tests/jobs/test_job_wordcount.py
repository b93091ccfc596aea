from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest

TEXT = b"the quick brown fox\njumps  over\tthe lazy dog\n\n"


def expected(source: str, data: bytes = TEXT) -> dict[str, object]:
    return {
        "source": source,
        "lines": data.count(b"\n"),
        "words": len(data.split()),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, len(TEXT)])
def test_counts_do_not_depend_on_how_the_input_is_chunked(job_module, chunk_size):
    wordcount = job_module("wordcount")
    chunks = [TEXT[i : i + chunk_size] for i in range(0, len(TEXT), chunk_size)]

    counts = wordcount.count(chunks, "x")

    assert counts.lines == 3
    assert counts.words == 9
    assert counts.bytes == len(TEXT)
    assert counts.sha256 == hashlib.sha256(TEXT).hexdigest()


def test_empty_input(job_module):
    counts = job_module("wordcount").count([], "empty")
    assert (counts.lines, counts.words, counts.bytes) == (0, 0, 0)
    assert counts.sha256 == hashlib.sha256(b"").hexdigest()


def test_file_path_prints_one_json_line(job_module, tmp_path, capsys):
    path = tmp_path / "input.txt"
    path.write_bytes(TEXT)

    assert job_module("wordcount").main([str(path)]) == 0

    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == expected(str(path))


def test_http_url(job_module, capsys):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(TEXT)))
            self.end_headers()
            self.wfile.write(TEXT)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/input.txt"
        assert job_module("wordcount").main([url]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(capsys.readouterr().out) == expected(url)


def test_missing_input_exits_66(job_module, tmp_path, capsys):
    assert job_module("wordcount").main([str(tmp_path / "missing.txt")]) == 66
    assert "cannot read" in capsys.readouterr().err


def test_input_over_the_limit_exits_65(job_module, tmp_path, capsys, monkeypatch):
    path = tmp_path / "big.txt"
    path.write_bytes(TEXT)
    monkeypatch.setenv("WORDCOUNT_MAX_BYTES", "10")  # the job's env sets the default limit

    assert job_module("wordcount").main([str(path)]) == 65
    assert "larger than 10 bytes" in capsys.readouterr().err


def test_source_is_required(job_module):
    with pytest.raises(SystemExit) as exc:
        job_module("wordcount").main([])
    assert exc.value.code == 2
