"""Reading a file a user named (a spec, a catalog, a job definition, a report): only a regular file, and
never more than a limit, so that a FIFO, /dev/zero or a huge file is refused with a message instead of
hanging or filling memory."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotReadable(ValueError):
    """The path names something other than a regular file, or a file over the limit; the message says which."""


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them. Raises OSError when it cannot be
    opened and NotReadable when it is not a regular file or is larger than ``limit``."""
    # O_NONBLOCK: opening a FIFO that no one writes would block before its type could be checked.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotReadable(f"{path} is not a regular file")
        data = handle.read(limit + 1)  # bounded whatever the size says (a file may grow while it is read)
    if len(data) > limit:
        raise NotReadable(f"{path} is over {limit:,} bytes, the limit")
    return data


__all__ = ["NotReadable", "read_regular_file"]
