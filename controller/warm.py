"""The warm host: ``fanout run`` (and ``fanout rerun``) in a process that has already imported the
controller, Prefect and the Google clients.

Importing them costs every command 3-5 s (more under load) before its first RunJob. The warm host pays it
once: ``python -m controller.warm serve`` imports them and waits on a Unix socket in the local Prefect
server's state dir (``warm-<digest>.sock``, ``controller.prefect_server.state_dir``), named after a digest
of the code (the package files, the interpreter, its site-packages), so a checkout or an upgrade never runs
in a host of other code. For each command it forks: the child adopts the command's stdin, stdout and
stderr (passed as file descriptors), its argv, working directory, umask and environment, reads Prefect's
settings again from that environment, runs the CLI's ``main`` and sends the exit code back.

The command side (``fanout`` console script, standard library only): ``run`` connects, hands the command
over and waits for its exit code, forwarding SIGINT, SIGTERM and SIGHUP to the child, so Ctrl-C and
``kill`` cancel the batch as they do in-process, and a command killed outright (SIGKILL) takes its batch's
controller with it, as in-process. It runs the command in its own process instead, with no
message, whenever the host is absent (and starts one in the background for the next command), refuses
(other code), does not answer, or ``FANOUT_WARM=0``. Once the child has the command, the child owns it.

A command hands over its argv, environment (secrets included) and stdio, so it trusts only its own user's
host: the state dir must be this user's with mode 0700 (a host creates it so, or makes this user's so), the
socket file this user's, and the process listening on it this user's (SO_PEERCRED); otherwise it runs in its
own process. The host takes commands only from processes of its own user, the same way.

The host forks only from a process that has imported modules and nothing more: one thread, no event loop,
no Prefect client, no gRPC channel. It stops on ``fanout server stop``, when its code changed on disk, when
its socket is gone, or after ``FANOUT_SERVER_IDLE_MINUTES`` (as the local server) without a command.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import io
import json
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from controller.prefect_server import idle_seconds_from_env, refresh_prefect_settings, state_dir
from controller.warm_hosts import REQUEST_TIMEOUT, socket_address

SWITCH = "FANOUT_WARM"
PROTOCOL = 1
HANDSHAKE_TIMEOUT = 5.0  # connect, hand over, fork: milliseconds when the host is well
TICK = 1.0  # how often an idle host checks whether it should stop
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# What a ``fanout run`` imports, beyond the CLI and the flow, before its first RunJob and after it.
PRELOAD = (
    "controller.cli",
    "controller.flow",
    "controller.emulator_jobs",
    "controller.artifacts",
    "controller.html_report",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.artifacts",
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.auto",
    "websockets.server",
    "fastapi",
    "_strptime",
    "rich._emoji_codes",
)


class WarmSettingError(ValueError):
    """``FANOUT_WARM`` holds something other than on or off."""


def enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    text = environ.get(SWITCH, "1").strip().lower()
    if text in ("1", "true", "yes", "on", ""):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise WarmSettingError(f"{SWITCH}: {text[:20]!r} is not 0 or 1")


def code_digest() -> str:
    """What the host's imports depend on: the interpreter, ``PYTHONPATH``, the site-packages folders (their
    mtime changes when a distribution is installed or removed) and every file of this package and the
    emulator's (size and mtime)."""
    digest = hashlib.sha256(f"{PROTOCOL}\0{sys.executable}\0{sys.version}\0".encode())
    digest.update(os.environ.get("PYTHONPATH", "").encode())
    for entry in sys.path:
        if entry.endswith("-packages") and os.path.isdir(entry):
            digest.update(f"\0{entry}\0{os.stat(entry).st_mtime_ns}".encode())
    root = Path(__file__).resolve().parent.parent
    for package in ("controller", "cloudrun_emulator"):
        for folder, subfolders, files in os.walk(root / package):
            subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
            for name in sorted(files):
                info = os.stat(os.path.join(folder, name))
                digest.update(f"\0{folder}/{name}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def socket_path(directory: Path, digest: str) -> Path:
    return directory / f"warm-{digest}.sock"


def _lock_path(directory: Path, digest: str) -> Path:
    return directory / f"warm-{digest}.lock"


# -- the command's side ------------------------------------------------------------------------------------


def run(argv: list[str]) -> int | None:
    """Run ``fanout argv`` in the warm host and return its exit code; None: run it in this process."""
    if argv[:1] not in (["run"], ["rerun"]) or not hasattr(socket, "send_fds") or not enabled():
        return None
    try:
        directory = state_dir()
        digest = code_digest()
        sock = _connect(directory, digest) if _private(directory) else None
    except OSError:
        return None
    if sock is None:
        _spawn(directory)
        return None
    with sock:
        return _hand_over(sock, argv, digest)


def _private(directory: Path) -> bool:
    """Whether ``directory`` is this user's alone (owned by it, mode 0700): a command hands its argv,
    environment (secrets included) and stdio to whatever listens there, so nobody else may put a socket in."""
    try:
        info = os.stat(directory)
    except OSError:
        return False
    return info.st_uid == os.getuid() and info.st_mode & 0o7777 == 0o700


def _make_private(directory: Path) -> None:
    """Create ``directory`` as 0700, or make this user's own 0700; raises PermissionError for another's."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != os.getuid():
        raise PermissionError(f"{directory} belongs to user {info.st_uid}, not to this user ({os.getuid()})")
    if info.st_mode & 0o7777 != 0o700:
        # A folder others could write to may hold a socket someone else put there: the host replaces it (bind),
        # and commands check that theirs is this user's (``_connect``).
        os.chmod(directory, 0o700)


def _peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process at the other end of ``conn``; None where the system cannot say (no SO_PEERCRED)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return int(uid)


def _connect(directory: Path, digest: str) -> socket.socket | None:
    """A connection to this user's warm host, or None: no socket, a dead one, or one that is not this user's
    (the file's owner, then the listening process's, by SO_PEERCRED)."""
    path = socket_path(directory, digest)
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        with socket_address(path) as address:
            sock.connect(address)
        uid = _peer_uid(sock)
    except OSError:  # a socket left by a host that died: the next host replaces it
        sock.close()
        return None
    if uid is not None and uid != os.getuid():
        sock.close()
        return None
    return sock


def _spawn(directory: Path) -> None:
    """Start a host in the background for the next command; one that finds another running exits."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
    with contextlib.suppress(OSError):
        _make_private(directory)  # another user's folder: no host, the commands run in their own process
        with (directory / "warm.log").open("ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "controller.warm", "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=directory,
                start_new_session=True,  # a Ctrl-C in this terminal is for this command, not the host
            )


def _std_fds() -> list[int]:
    fds = []
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.fstat(fd)
            fds.append(fd)
    return fds


def _request(argv: list[str], digest: str) -> dict[str, Any]:
    umask = os.umask(0o022)
    os.umask(umask)
    streams = {
        name: [getattr(stream, "encoding", None), getattr(stream, "errors", None)]
        for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr))
    }
    return {
        "protocol": PROTOCOL,
        "digest": digest,
        "argv0": sys.argv[0],
        "argv": argv,
        "cwd": os.getcwd(),
        "umask": umask,
        "env": dict(os.environ),
        "fds": _std_fds(),
        "streams": streams,
    }


class _Forwarder:
    """Signals this command receives: held until the child runs the command, then sent to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.live = False
        self.pending: list[int] = []
        self.last: int | None = None
        self.previous = {sig: signal.signal(sig, self._handle) for sig in FORWARDED}

    def _handle(self, signum: int, _frame: object) -> None:
        self.last = signum
        if self.live:
            with contextlib.suppress(OSError):
                self.sock.sendall(f"signal {signum}\n".encode())
        else:
            self.pending.append(signum)

    def start(self) -> None:
        self.live = True
        for signum in self.pending:
            self.sock.sendall(f"signal {signum}\n".encode())
        self.pending.clear()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        for signum in self.pending:  # not handed over: this process takes them as it would have
            signal.raise_signal(signum)


def _hand_over(sock: socket.socket, argv: list[str], digest: str) -> int | None:
    forwarder = _Forwarder(sock)
    try:
        request = _request(argv, digest)
        socket.send_fds(sock, [b"\0"], request["fds"])
        sock.sendall(json.dumps(request).encode() + b"\n")
        reader = sock.makefile("rb")
        answer = json.loads(reader.readline() or b"{}")
        if not isinstance(answer, dict) or not isinstance(answer.get("pid"), int):
            raise ValueError(f"the warm host refused: {answer}")
        sock.sendall(b"go\n")
    except (OSError, ValueError):
        forwarder.restore()
        return None
    # From here the child runs the command: its exit code is this command's.
    sock.settimeout(None)
    forwarder.start()
    return _exit_code(reader, forwarder)


def _exit_code(reader: IO[bytes], forwarder: _Forwarder) -> int:
    while True:
        try:
            line = reader.readline()
        except OSError:
            line = b""
        if line.startswith(b"exit "):
            return int(line.split()[1])
        if not line:
            break
    # The child ended without an exit code: killed. By a signal this command forwarded: end the same way.
    if forwarder.last is not None:
        signal.signal(forwarder.last, signal.SIG_DFL)
        signal.raise_signal(forwarder.last)
    print("fanout: the warm process running this command ended without an exit code", file=sys.stderr)
    return 1


# -- the host's side ---------------------------------------------------------------------------------------


class _Stop(Exception):
    """``fanout server stop`` asked this host to stop."""


def _peer_pid(conn: socket.socket) -> int | None:
    """The connected command's pid (0 where the system does not say); None if another user's."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return 0  # no SO_PEERCRED (macOS): the socket file's mode (0600) and its 0700 folder are the guard
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return int(pid) if uid == os.getuid() else None


class Host:
    """The forking server: one per code digest and state dir."""

    def __init__(self, directory: Path, digest: str, idle_seconds: float) -> None:
        self.directory = directory
        self.digest = digest
        self.idle_seconds = idle_seconds
        self.path = socket_path(directory, digest)
        self.children: set[int] = set()
        self.last_used = time.monotonic()
        self.listener: socket.socket | None = None
        self.lock: IO[str] | None = None
        self.pid = os.getpid()

    def claim(self) -> bool:
        """The host's lock, held for its life; False if another host of this code holds it. Raises
        PermissionError when the folder is another user's."""
        _make_private(self.directory)
        handle = _lock_path(self.directory, self.digest).open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self.lock = handle
        return True

    def bind(self) -> None:
        self.path.unlink(missing_ok=True)  # a dead host's: this one holds the lock
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # the socket file is 0600: only this user may hand commands over
        try:
            with socket_address(self.path) as address:
                listener.bind(address)
        finally:
            os.umask(umask)
        listener.listen(64)
        listener.settimeout(TICK)
        self.listener = listener
        self.last_used = time.monotonic()  # idle from now, not from before the imports
        self.inode = self.path.stat().st_ino

    def serve(self) -> None:
        assert self.listener is not None
        try:
            while not self._should_stop():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    self.last_used = time.monotonic()
                    self._serve_one(conn)
        except _Stop:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if os.getpid() != self.pid:
            return  # a forked child's copy: the socket and the lock are the host's
        if self.listener is not None:
            self.listener.close()
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self.inode:
                    self.path.unlink()
        if self.lock is not None:
            self.lock.close()

    def _reap(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, _status = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
            self.children.discard(pid)

    def _should_stop(self) -> bool:
        self._reap()
        try:
            if self.path.stat().st_ino != self.inode:
                return _said("its socket was replaced: stopping")
        except OSError:
            return _said("its socket is gone: stopping")
        if code_digest() != self.digest:
            return _said("the code changed on disk: stopping")
        if not self.children and time.monotonic() - self.last_used > self.idle_seconds:
            return _said(f"idle for {self.idle_seconds / 60:g} min: stopping")
        return False

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_TIMEOUT)
        fds: list[int] = []
        try:
            peer = _peer_pid(conn)
            if peer is None:
                return
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 1, 3)
            reader = conn.makefile("rb")
            request = json.loads(reader.readline() or b"{}")
            if not isinstance(request, dict):
                return
            if request.get("op") == "stop":
                conn.sendall(b'{"stopping": true}\n')
                raise _Stop
            if request.get("protocol") != PROTOCOL or request.get("digest") != self.digest:
                conn.sendall(b'{"refused": "other code"}\n')
                return
            self._fork(conn, reader, fds, request, peer)
        except (OSError, ValueError) as exc:
            _said(f"a command could not be handed over: {exc}")
        finally:
            for fd in fds:
                os.close(fd)

    def _fork(self, conn: socket.socket, reader: IO[bytes], fds: list[int], request: dict[str, Any], peer: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _child(conn, reader, fds, request, [self.listener, self.lock])
            finally:
                os._exit(1)  # never back into the host's loop
        self.children.add(pid)
        _said(f"took the command of pid {peer} (its process: {pid})")


def _said(message: str) -> bool:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    print(f"{stamp} fanout warm host {os.getpid()}: {message}", flush=True)
    return True


# -- the child: one command --------------------------------------------------------------------------------


def _child(
    conn: socket.socket, reader: IO[bytes], fds: list[int], request: dict[str, Any], closing: list[Any]
) -> NoReturn:
    code = 1
    try:
        for handle in closing:
            handle.close()  # the listener, and this copy of the host's lock (the lock stays the host's)
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        conn.settimeout(None)
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        if reader.readline().strip() != b"go":
            os._exit(0)  # the command took itself back: it runs in its own process
        _adopt(fds, request)
        threading.Thread(target=_relay_signals, args=(reader,), name="warm-signals", daemon=True).start()
        code = _run_cli(request["argv"])
    except BaseException:  # whatever it was, the command gets it as a traceback and exit 1
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            from controller.clean_exit import settle

            settle()
        with contextlib.suppress(BaseException):
            for sig in FORWARDED:  # the command has its exit code: a late signal must not change it
                signal.signal(sig, signal.SIG_IGN)
            conn.sendall(f"exit {code}\n".encode())
        os._exit(code & 0xFF)


def _adopt(fds: list[int], request: dict[str, Any]) -> None:
    """Become the command's process: its stdio, working directory, umask, environment and settings."""
    for target, fd in zip(request["fds"], fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    fds.clear()
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["argv0"], *request["argv"]]
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    streams = request["streams"]
    sys.stdin = _text_stream(0, "r", *streams["stdin"], unbuffered=False)
    sys.stdout = _text_stream(1, "w", *streams["stdout"], unbuffered=unbuffered)
    sys.stderr = _text_stream(2, "w", *streams["stderr"], unbuffered=unbuffered)
    from controller.offline import apply_quiet_defaults

    apply_quiet_defaults()  # what importing controller.flow did to the host's environment
    refresh_prefect_settings()
    from prefect.logging.configuration import setup_logging

    setup_logging(incremental=False)  # handlers on this command's stderr, at its logging settings


def _text_stream(fd: int, mode: str, encoding: str | None, errors: str | None, *, unbuffered: bool) -> Any:
    """A text stream on ``fd`` as the interpreter would have made it for this command."""
    if mode == "r":
        return open(fd, "r", encoding=encoding, errors=errors, closefd=False)  # noqa: UP015
    binary: Any = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115
    line_buffered = fd == 2 or os.isatty(fd)
    return io.TextIOWrapper(
        binary, encoding=encoding, errors=errors, line_buffering=line_buffered, write_through=unbuffered
    )


def _relay_signals(reader: IO[bytes]) -> None:
    """Signals the command received, raised here. A command that is gone without a word was killed
    (SIGKILL, a crash): this process ends the same way, at once and without cancelling, as a controller run
    in the command's own process would have. Its executions keep running, its lease expires, and the next
    ``fanout run`` of the batch resumes it (docs/reliability.md, "Resume")."""
    for line in reader:
        if line.startswith(b"signal "):
            os.kill(os.getpid(), int(line.split()[1]))
    os.kill(os.getpid(), signal.SIGKILL)


def _run_cli(argv: list[str]) -> int:
    from controller.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1


# -- starting and stopping ---------------------------------------------------------------------------------


def serve(directory: Path) -> int:
    """``python -m controller.warm serve``: import, then host commands until told or time to stop."""
    digest = code_digest()
    host = Host(directory, digest, idle_seconds_from_env())
    try:
        if not host.claim():
            return 0  # another host serves this code
    except PermissionError as exc:
        _said(f"not hosting: {exc}")
        return 1
    for name in PRELOAD:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(name)
    if threading.active_count() != 1:
        _said(f"an import started a thread ({threading.enumerate()}): forking is not safe, not hosting")
        host.close()
        return 1
    host.bind()
    _said(f"hosting `fanout run` for code {digest} at {host.path}")
    host.serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["serve"]:
        print("usage: python -m controller.warm serve  (started by fanout run; stopped by fanout server stop)")
        return 2
    return serve(Path.cwd())


if __name__ == "__main__":
    sys.exit(main())
