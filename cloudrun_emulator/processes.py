"""Task attempts as local processes: one process group per attempt, output read line by line.

Each attempt starts in a new session (its own process group), so a timeout, a cancel or the emulator's
shutdown kills the command and everything it spawned with one ``killpg``. The attempt's timeout and the
emulator's death are the task supervisor's to enforce (cloudrun_emulator.supervisor): it is a process of its
own, so neither a starved event loop nor a SIGKILLed emulator leaves a task running past its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudrun_emulator import supervisor
from cloudrun_emulator.supervisor import kill_group

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


async def _ended(proc: asyncio.subprocess.Process, pipes: set[str]) -> None:
    """Until the command has ended and its output is closed.

    ``proc.wait()`` returns only once nothing holds the command's output open. When the command has ended
    (Linux: its pidfd turns readable) and something it left running still holds its output after a short
    drain, that goes: it would have ended with the container on Cloud Run.
    """
    waiting: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        fd = None  # ended and reaped already: only the output can be left
    except (AttributeError, OSError):
        await waiting  # no pidfds here: as asyncio does
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[Any] = loop.create_future()

    def ended() -> None:
        if not exited.done():
            exited.set_result(None)

    if fd is None:
        ended()
    else:
        loop.add_reader(fd, ended)
    try:
        await asyncio.wait([waiting, exited], return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            await asyncio.wait([waiting], timeout=_READ_DRAIN_SECONDS)
        if not waiting.done():
            supervisor.kill_container(proc.pid)
            supervisor.kill_pipe_holders(pipes)
        await waiting
    finally:
        if fd is not None:
            loop.remove_reader(fd)
            os.close(fd)


class ProcessGroups:
    """Starts attempts and keeps the live ones so they can be killed individually or all at once."""

    def __init__(self, kill_grace_seconds: float) -> None:
        self.kill_grace_seconds = kill_grace_seconds
        self._live: dict[int, asyncio.subprocess.Process] = {}
        self._stop_requested: set[int] = set()
        self._supervisor = Supervisor()

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

        ``on_start`` gets the process id (which is also its process group id) as soon as it exists. The timeout
        counts from here, however late the event loop gets to the steps that follow.
        """
        deadline = time.monotonic() + timeout
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
        try:
            self._supervisor.watch(proc.pid, deadline, self.kill_grace_seconds)
        except OSError:
            self._live.pop(proc.pid)
            kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise RuntimeError("the task supervisor is gone; the attempt was stopped") from None
        pipes = supervisor.output_pipes(proc.pid)
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
            fault = asyncio.get_running_loop().call_later(kill_after, kill_group, proc.pid, signal.SIGKILL)
        timed_out = False
        try:
            await _ended(proc, pipes)
            timed_out = self._supervisor.timed_out(proc.pid)
            # The container ends with its command: whatever the command left running goes too.
            supervisor.kill_container(proc.pid)
            _done, pending = await asyncio.wait(readers, timeout=_READ_DRAIN_SECONDS)
            for reader in pending:
                reader.cancel()
        finally:
            if fault is not None:
                fault.cancel()
            self._live.pop(proc.pid, None)
            self._supervisor.forget(proc.pid)
            requested = proc.pid in self._stop_requested
            self._stop_requested.discard(proc.pid)
        code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        exit_code = 128 - code if code < 0 else code
        return Outcome(exit_code, timed_out=timed_out, killed_by_request=requested)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.kill_grace_seconds)
        except TimeoutError:
            kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        # Whatever the command left behind in its group goes too.
        kill_group(proc.pid, signal.SIGKILL)

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
            kill_group(pid, signal.SIGKILL)
        self._supervisor.close()


class Supervisor:
    """The emulator's end of its task supervisor (see cloudrun_emulator.supervisor), started on first use."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._answers = b""
        self._timed_out: set[int] = set()

    def watch(self, pgid: int, deadline: float, grace: float) -> None:
        """Have the group stopped at ``deadline`` (time.monotonic()) and killed if the emulator dies."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            proc = self._proc = self._start()
        # An answer about an earlier group of this number (the pid was reused) must not count for this one.
        self._read_answers()
        self._timed_out.discard(pgid)
        assert proc.stdin is not None
        os.write(proc.stdin.fileno(), f"watch {pgid} {deadline!r} {grace!r}\n".encode())

    def forget(self, pgid: int) -> None:
        self._timed_out.discard(pgid)
        proc = self._proc
        if proc is not None and proc.stdin is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.write(proc.stdin.fileno(), f"forget {pgid}\n".encode())

    def timed_out(self, pgid: int) -> bool:
        """Whether the supervisor stopped the group at its deadline; asked once its leader has ended, so the
        answer is already in the pipe (the supervisor writes it before it signals)."""
        self._read_answers()
        return pgid in self._timed_out

    def _read_answers(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdout is not None:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(proc.stdout.fileno(), 65536):
                    self._answers += chunk
        *lines, self._answers = self._answers.split(b"\n")
        self._timed_out.update(int(line.split()[1]) for line in lines)

    def close(self) -> None:
        """End the supervisor: it kills whatever it still watches, and exits. Its exit is awaited off the event
        loop, which keeps answering meanwhile."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        threading.Thread(target=proc.wait, name="task-supervisor-exit", daemon=True).start()

    @staticmethod
    def _start() -> subprocess.Popen[bytes]:
        # -I -S: no site-packages, no user paths, no environment; the script needs the standard library only.
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(Path(supervisor.__file__))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        return proc


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
