"""The task supervisor: a separate process that kills task process groups the emulator's loop cannot.

It does two things the emulator cannot promise on its own:

- **Timeouts from the task's start time.** The emulator's event loop can be starved (a busy machine, thousands
  of tasks); a timer on that loop fires late, and a task that ran far past its timeout could exit by itself
  before the late timer noticed. The supervisor keeps each task's deadline on its own clock and stops the
  group there (SIGTERM, then SIGKILL after the grace period), as Cloud Run stops a container at its timeout.
- **No task outlives the emulator.** Its standard input is a pipe only the emulator writes; when the emulator
  ends, however it ends (SIGKILL included), the pipe closes and the supervisor SIGKILLs every group it watches.
  A parent that changed (checked every ``CHECK_SECONDS``) counts the same.

A group is the task's command and what it spawned; a descendant that left it (``setsid``, ``setpgid``) is found
from /proc by its parent, while that parent lives, and killed with the group: when the emulator dies, and when
a timed-out task is killed (found at the SIGTERM, before its parent can exit). One that was orphaned first
(a double fork) or was born while the supervisor was killing is not found here; the emulator finds one that
still holds the task's output open when the task ends (``kill_pipe_holders``).

One supervisor serves one emulator: a task's start costs one line on a pipe, not a process. It runs as a
script (``python -I -S supervisor.py``, standard library only) in its own session, so no signal meant for the
emulator's process group reaches it before it has done its work.

Lines in (from the emulator)::

    watch PGID DEADLINE GRACE   DEADLINE in time.monotonic() seconds (CLOCK_MONOTONIC is the same in every
                                process); GRACE seconds from SIGTERM to SIGKILL
    forget PGID                 the emulator has seen the group's leader end

Lines out: ``timeout PGID``, written before the SIGTERM, only when the group's leader was still running at its
deadline. A leader that ended in time but was not reaped yet (a zombie) is not timed out.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

# How often the supervisor checks that its parent is still the emulator, between deadlines and input.
CHECK_SECONDS = 0.5
_HAVE_PROC = os.path.isdir("/proc/self")


@dataclass
class Watched:
    started: str | None  # the leader's start time in /proc (clock ticks after boot): a reused pid differs
    deadline: float
    grace: float
    terminated: bool = False
    settled: bool = False  # nothing left to do but forget it (or kill it when the emulator dies)
    strays: dict[int, str] | None = None  # descendants outside the group at the SIGTERM: pid -> start time

    @property
    def due(self) -> float:
        return self.deadline + self.grace if self.terminated else self.deadline


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return None
    return fields[0], fields[19]


def _leader_running(pgid: int, watched: Watched) -> bool:
    if not _HAVE_PROC:
        try:
            os.kill(pgid, 0)  # no /proc: a zombie counts as running, the cautious answer
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _proc_stat(pgid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == watched.started


def _still_ours(pgid: int, watched: Watched) -> bool:
    """False when the group's number now belongs to another process: the leader ended, was reaped and its
    pid was taken again (a number stays reserved while any member of its group lives)."""
    if not _HAVE_PROC:
        return True
    stat = _proc_stat(pgid)
    return stat is None or stat[1] == watched.started


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, start time) of every process, from /proc (empty without it)."""
    table: dict[int, tuple[int, int, str]] = {}
    if not _HAVE_PROC:
        return table
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        table[int(name)] = (int(fields[1]), int(fields[2]), fields[19])
    return table


def strays(groups: set[int]) -> dict[int, str]:
    """Live descendants of the members of ``groups`` that left them: pid -> start time."""
    table = _process_table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    found: dict[int, str] = {}
    pending = [pid for pid, (_, pgid, _) in table.items() if pgid in groups]
    while pending:
        for child in children.get(pending.pop(), ()):
            if table[child][1] not in groups and child not in found:
                found[child] = table[child][2]
            pending.append(child)
    return found


def kill_strays(found: dict[int, str]) -> None:
    """SIGKILL each process of ``found`` that is still the one found (its pid not taken again)."""
    for pid, started in found.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def kill_container(pgid: int) -> None:
    """A task's command ended, and with it its container, as on Cloud Run: SIGKILL what it left running in its
    group and what left the group from there (found by its parent, so only while a group member lives)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return  # the group is empty: nothing left, and nothing that left it can be told by its parent
    found = strays({pgid})
    kill_group(pgid, signal.SIGKILL)
    kill_strays(found)


def output_pipes(pid: int) -> set[str]:
    """The pipes a process writes its standard output and error to (``pipe:[inode]``), from /proc."""
    found = set()
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if (link := os.readlink(f"/proc/{pid}/fd/{fd}")).startswith("pipe:"):
                found.add(link)
    return found


def kill_pipe_holders(pipes: set[str]) -> int:
    """SIGKILL every other process that holds one of ``pipes`` open; how many there were."""
    killed = 0
    for name in os.listdir("/proc") if pipes and _HAVE_PROC else ():
        if not name.isdigit() or int(name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{name}/fd/{fd}") in pipes for fd in os.listdir(f"/proc/{name}/fd")):
                os.kill(int(name), signal.SIGKILL)
                killed += 1
    return killed


def kill_group(pgid: int, sig: int) -> None:
    """Signal a process group that may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _enforce(watched: dict[int, Watched], now: float) -> None:
    for pgid, entry in watched.items():
        if entry.settled or entry.due > now:
            continue
        if entry.terminated:
            if _still_ours(pgid, entry):
                kill_group(pgid, signal.SIGKILL)
            kill_strays(entry.strays or {})
            entry.settled = True
        elif _leader_running(pgid, entry):
            os.write(1, f"timeout {pgid}\n".encode())
            entry.strays = strays({pgid})
            kill_group(pgid, signal.SIGTERM)
            entry.terminated = True
        else:
            entry.settled = True


def _apply(line: str, watched: dict[int, Watched]) -> None:
    verb, _, rest = line.partition(" ")
    args = rest.split()
    if verb == "watch" and len(args) == 3:
        pgid = int(args[0])
        stat = _proc_stat(pgid) if _HAVE_PROC else None
        watched[pgid] = Watched(stat[1] if stat else None, float(args[1]), float(args[2]))
    elif verb == "forget" and len(args) == 1:
        watched.pop(int(args[0]), None)
    else:
        raise ValueError(f"the task supervisor cannot read {line!r}")


def _wait_seconds(watched: dict[int, Watched], now: float) -> float:
    dues = [entry.due for entry in watched.values() if not entry.settled]
    return max(0.0, min([CHECK_SECONDS, *(due - now for due in dues)]))


def supervise(stdin: int = 0) -> None:
    """Serve one emulator until its pipe closes or it is gone; then SIGKILL every group still watched."""
    parent = os.getppid()
    watched: dict[int, Watched] = {}
    pending = b""
    try:
        while os.getppid() == parent:
            ready, _, _ = select.select([stdin], [], [], _wait_seconds(watched, time.monotonic()))
            if ready:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    _apply(line.decode("ascii"), watched)
            _enforce(watched, time.monotonic())
    finally:
        ours = {pgid for pgid, entry in watched.items() if _still_ours(pgid, entry)}
        found = strays(ours)
        for pgid in ours:
            kill_group(pgid, signal.SIGKILL)
        kill_strays(found)
        for entry in watched.values():
            kill_strays(entry.strays or {})


def _exit(signum: int, frame: object) -> None:
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the emulator's to handle; EOF follows it
    signal.signal(signal.SIGTERM, _exit)  # stopped on purpose: its groups go with it
    supervise()
