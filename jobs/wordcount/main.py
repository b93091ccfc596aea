"""wordcount: line, word and byte counts and a SHA-256 digest of one input, printed as one JSON line.

    wordcount SOURCE [--max-bytes N]

SOURCE is a file path, or a ``file:``, ``http(s):`` or ``data:`` URL. The input is streamed, so its size
is bounded only by ``--max-bytes`` (default ``WORDCOUNT_MAX_BYTES``, else 1 GiB). Counts follow ``wc``:
lines are newline characters, words are runs of non-whitespace bytes.

The same JSON is its result: written to ``$FANOUT_RESULT_FILE`` when the fan-out controller sets it.

Exit codes: 0 done, 2 bad usage, 65 (EX_DATAERR) input larger than the limit, 66 (EX_NOINPUT) the input
could not be opened or read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO

EX_DATAERR = 65
EX_NOINPUT = 66
CHUNK_BYTES = 1 << 16
DEFAULT_MAX_BYTES = 1 << 30
URL_SCHEMES = ("http://", "https://", "file:", "data:")
_WHITESPACE = b" \t\n\r\v\f"


class InputTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Counts:
    source: str
    lines: int
    words: int
    bytes: int
    sha256: str


def count(chunks: Iterable[bytes], source: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Counts:
    """Counts over a stream of chunks; a word split across two chunks is counted once."""
    digest = hashlib.sha256()
    lines = words = size = 0
    in_word = False
    for chunk in chunks:
        if not chunk:
            continue
        size += len(chunk)
        if size > max_bytes:
            raise InputTooLarge(f"{source}: larger than {max_bytes} bytes")
        digest.update(chunk)
        lines += chunk.count(b"\n")
        words += len(chunk.split())
        if in_word and chunk[0] not in _WHITESPACE:
            words -= 1
        in_word = chunk[-1] not in _WHITESPACE
    return Counts(source=source, lines=lines, words=words, bytes=size, sha256=digest.hexdigest())


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


def open_source(source: str) -> BinaryIO:
    """A binary stream over a path or URL; raises OSError (or URLError) when it cannot be opened."""
    if source.startswith(URL_SCHEMES):
        import urllib.request  # ~90 ms of imports (http.client, ssl, email): only a URL pays them

        response: BinaryIO = urllib.request.urlopen(source, timeout=60)
        return response
    return open(source, "rb")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wordcount", description="Count lines, words and bytes.")
    parser.add_argument("source", metavar="SOURCE", help="a file path or a file:, http(s): or data: URL")
    default_max = int(os.environ.get("WORDCOUNT_MAX_BYTES") or DEFAULT_MAX_BYTES)
    parser.add_argument("--max-bytes", type=int, default=default_max, metavar="N")
    args = parser.parse_args(argv)
    if args.max_bytes <= 0:
        parser.error("--max-bytes must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        with open_source(args.source) as stream:
            result = count(_chunks(stream), args.source, args.max_bytes)
    except InputTooLarge as exc:
        print(f"wordcount: {exc}", file=sys.stderr)
        return EX_DATAERR
    except (OSError, ValueError) as exc:  # urllib's URLError is an OSError
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        print(f"wordcount: cannot read {args.source}: {reason}", file=sys.stderr)
        return EX_NOINPUT
    line = json.dumps(asdict(result), sort_keys=True)
    print(line, flush=True)
    if result_file := os.environ.get("FANOUT_RESULT_FILE"):
        with open(result_file, "w", encoding="utf-8") as handle:
            handle.write(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
