"""Task attempts as local processes: one process group per attempt, output read line by line.

Each attempt starts in a new session (its own process group), so a timeout, a cancel or the emulator's
shutdown kills the command and everything it spawned with one ``killpg``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# Cloud Logging's limit for one entry is 256 KiB; a longer line becomes several entries, as on Cloud Run.
_LINE_LIMIT = 256 * 1024
_READ_DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: an exit code (128+N for signal N, as a container runtime reports), or killed."""

    exit_code: int
    timed_out: bool = False
    killed_by_request: bool = False


LineSink = Callable[[str, str], None]


class ProcessGroups:
    """Starts attempts and keeps the live ones so they can be killed individually or all at once."""

    def __init__(self, kill_grace_seconds: float) -> None:
        self.kill_grace_seconds = kill_grace_seconds
        self._live: dict[int, asyncio.subprocess.Process] = {}
        self._stop_requested: set[int] = set()

    @property
    def running(self) -> int:
        return len(self._live)

    async def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        timeout: float,
        on_line: LineSink,
        *,
        kill_after: float | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> Outcome:
        """Run one attempt to its end; raises OSError when the command cannot be started.

        ``on_start`` gets the process id (which is also its process group id) as soon as it exists.
        """
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            limit=_LINE_LIMIT,
        )
        self._live[proc.pid] = proc
        if on_start is not None:
            on_start(proc.pid)
        assert proc.stdout is not None
        assert proc.stderr is not None
        readers = [
            asyncio.create_task(_pump(proc.stdout, "stdout", on_line)),
            asyncio.create_task(_pump(proc.stderr, "stderr", on_line)),
        ]
        fault = None
        if kill_after is not None:
            fault = asyncio.get_running_loop().call_later(kill_after, _killpg, proc.pid, signal.SIGKILL)
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                timed_out = True
                await self._terminate(proc)
            # A grandchild that left the process group can hold the pipes open: do not wait for it forever.
            _done, pending = await asyncio.wait(readers, timeout=_READ_DRAIN_SECONDS)
            for reader in pending:
                reader.cancel()
        finally:
            if fault is not None:
                fault.cancel()
            self._live.pop(proc.pid, None)
            requested = proc.pid in self._stop_requested
            self._stop_requested.discard(proc.pid)
        code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        exit_code = 128 - code if code < 0 else code
        return Outcome(exit_code, timed_out=timed_out, killed_by_request=requested)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.kill_grace_seconds)
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        # Whatever the command left behind in its group goes too.
        _killpg(proc.pid, signal.SIGKILL)

    async def stop(self, pid: int) -> None:
        """Stop one attempt as Cloud Run stops a container: SIGTERM, then SIGKILL after the grace period."""
        proc = self._live.get(pid)
        if proc is None:
            return
        self._stop_requested.add(pid)
        await self._terminate(proc)

    def kill_all(self) -> None:
        """SIGKILL every live attempt's whole process group at once."""
        for pid in list(self._live):
            self._stop_requested.add(pid)
            _killpg(pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _pump(stream: asyncio.StreamReader, name: str, on_line: LineSink) -> None:
    while True:
        try:
            chunk = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                on_line(name, exc.partial.decode("utf-8", "replace"))
            return
        except asyncio.LimitOverrunError as exc:
            chunk = await stream.readexactly(exc.consumed)
            on_line(name, chunk.decode("utf-8", "replace"))
            continue
        on_line(name, chunk[:-1].decode("utf-8", "replace").rstrip("\r"))


class DockerProbe:
    """Whether a Docker engine answers; asked once, on first need."""

    def __init__(self) -> None:
        self._answer: bool | None = None

    async def available(self) -> bool:
        if self._answer is None:
            self._answer = await _docker_answers()
        return self._answer


async def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        proc = await asyncio.create_subprocess_exec(
            docker,
            "version",
            "--format",
            "{{.Server.Version}}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), 5.0) == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False
