"""``Emulator``: the local Cloud Run Admin API v2 + Logging server, served from a background thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import grpc
import uvicorn

from cloudrun_emulator.api.app import EmulatorApp
from cloudrun_emulator.api.grpc_app import GrpcApp
from cloudrun_emulator.api.rpc import Dispatcher, Stats
from cloudrun_emulator.faults import FaultInjector, Faults
from cloudrun_emulator.logstore import DEFAULT_MAX_ENTRIES, DEFAULT_QUERY_BUDGET, LogStore
from cloudrun_emulator.records import JobSeed
from cloudrun_emulator.service import CloudRunService

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 15.0
_GRPC_GRACE = 2.0  # seconds the gRPC calls under way get at stop, as uvicorn's graceful shutdown


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Emulator:
    """A local Cloud Run Admin API v2 (jobs, executions, tasks, operations) and Logging ``entries:list``.

    Tasks run as local processes; ``simulate=True`` (controller scale benchmarks only) starts none and takes
    each attempt's duration and exit code from its arguments (cloudrun_emulator.simulated). A task's Cloud
    Storage volumes sync with ``STORAGE_EMULATOR_HOST`` (else Cloud Storage), or map to a local folder for the
    buckets in ``local_buckets`` (bucket name -> folder; cloudrun_emulator.volumes). Each instance has
    fresh state, plus the ``jobs`` it is seeded with. Use as a context manager, or call ``start()`` and ``stop()``.

    The API is served over HTTP/JSON at ``url`` and over gRPC at ``grpc_target`` (plaintext, ``grpc_port``),
    and, with ``grpc_tls_port``, over gRPC with TLS at ``grpc_tls_target`` with a self-signed certificate in
    ``grpc_roots_file`` (for clients that open TLS channels and are to stay unchanged).
    """

    def __init__(
        self,
        jobs: Iterable[JobSeed] = (),
        project: str = "local-project",
        region: str = "us-central1",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        local_images: Mapping[str, list[str]] | None = None,
        max_running_tasks: int | None = None,
        use_docker: bool = False,
        *,
        secrets: Mapping[str, str] | None = None,
        max_log_entries: int = DEFAULT_MAX_ENTRIES,
        log_query_budget_seconds: float = DEFAULT_QUERY_BUDGET,
        kill_grace_seconds: float = 1.0,
        simulate: bool = False,
        local_buckets: Mapping[str, str] | None = None,
        grpc_port: int = 0,
        grpc_tls_port: int | None = None,
    ) -> None:
        self.project = project
        self.region = region
        self.host = host
        self._requested_port = port
        self._requested_grpc_port = grpc_port
        self._grpc_port: int | None = None
        self._requested_tls_port = grpc_tls_port
        self._tls_port: int | None = None
        self._tls_dir: str | None = None
        self._faults = FaultInjector(faults)
        self._stats = Stats()
        self._make_service = functools.partial(
            CloudRunService,
            project=project,
            region=region,
            jobs=list(jobs),
            local_images=dict(local_images or {}),
            secrets=dict(secrets or {}),
            max_running_tasks=max_running_tasks,
            use_docker=use_docker,
            faults=self._faults,
            logs=LogStore(max_log_entries, log_query_budget_seconds),
            kill_grace_seconds=kill_grace_seconds,
            simulate=simulate,
            local_buckets=dict(local_buckets or {}),
        )
        self._service: CloudRunService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._grpc_server: grpc.aio.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._failure: BaseException | None = None
        self._ready = threading.Event()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Emulator:
        """Bind the port and serve from a background thread; returns once requests are answered."""
        if self._thread is not None:
            raise RuntimeError("this emulator is already started")
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this: without it, Nagle's algorithm and the client's delayed ACK add
        # ~40 ms to every answer (headers and body go out as two writes).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(1024)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve_thread, name="cloudrun-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) or self._failure is not None:
            failure = self._failure
            self.stop()
            if isinstance(failure, OSError):
                raise failure
            raise RuntimeError(f"the emulator did not start: {self._failure!r}")
        atexit.register(self.stop)
        return self

    def _serve_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        service = self._make_service()
        self._service = service
        dispatcher = Dispatcher(service, self._faults, self._stats)
        # The gRPC server runs on this loop too, so both transports reach the service from its own loop.
        # grpc binds with SO_REUSEPORT unless told not to: a second emulator on a taken port would then share
        # it, each answering some of the calls from its own state.
        grpc_server = grpc.aio.server(handlers=GrpcApp(dispatcher).handlers(), options=[("grpc.so_reuseport", 0)])
        self._grpc_server = grpc_server
        where = _host_port(self.host, self._requested_grpc_port)
        try:
            self._grpc_port = grpc_server.add_insecure_port(where)
            if self._requested_tls_port is not None:
                where = _host_port(self.host, self._requested_tls_port)
                self._tls_port = grpc_server.add_secure_port(where, self._tls_credentials())
        except RuntimeError as exc:
            raise OSError(f"cannot serve gRPC on {where}: {exc} (is the port taken?)") from None
        await grpc_server.start()
        config = uvicorn.Config(
            EmulatorApp(dispatcher),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        assert self._sock is not None
        serving = asyncio.ensure_future(server.serve(sockets=[self._sock]))
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started and not serving.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if not server.started:
            self._failure = serving.exception() if serving.done() else TimeoutError("uvicorn did not report started")
        self._ready.set()
        try:
            await serving
        finally:
            await grpc_server.stop(_GRPC_GRACE)
            await service.shutdown()

    def _tls_credentials(self) -> grpc.ServerCredentials:
        """Server credentials from a fresh self-signed certificate, written (the certificate only) to a file
        of this instance's for clients to trust."""
        from cloudrun_emulator.tls import self_signed  # cryptography only for an emulator that serves TLS

        key, cert = self_signed(self.host)
        self._tls_dir = tempfile.mkdtemp(prefix="cloudrun-emulator-tls-")
        Path(self._tls_dir, "roots.pem").write_bytes(cert)
        return grpc.ssl_server_credentials([(key, cert)])

    def stop(self) -> None:
        """Stop serving, then kill every running task process (whole process group). Idempotent.

        In that order: Cloud Run does not stop, so a client that asks meanwhile finds nobody answering, never
        executions that this stop ended (uvicorn answers the requests under way within its graceful shutdown,
        and ``_serve`` kills the tasks once it has returned)."""
        atexit.unregister(self.stop)
        loop, thread, service = self._loop, self._thread, self._service
        if self._server is not None:
            self._server.should_exit = True
        if thread is not None:
            thread.join(_STOP_TIMEOUT)
        if thread is not None and thread.is_alive() and loop is not None and service is not None:
            # The loop did not finish in time: kill the tasks from here, if it still runs anything at all.
            with contextlib.suppress(RuntimeError, TimeoutError):
                asyncio.run_coroutine_threadsafe(service.shutdown(), loop).result(_STOP_TIMEOUT)
        if self._sock is not None:
            self._sock.close()
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None
        self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- queries

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        if self._sock is None:
            raise RuntimeError("the emulator is not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """Base URL to give clients as ``api_endpoint``, e.g. ``http://127.0.0.1:8123``."""
        return f"http://{_host_port(self.host, self.port)}"

    @property
    def grpc_port(self) -> int:
        """The gRPC port actually bound."""
        if self._grpc_port is None:
            raise RuntimeError("the emulator is not started")
        return self._grpc_port

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC server (plaintext), for ``grpc.insecure_channel`` and ``api_endpoint``."""
        return _host_port(self.host, self.grpc_port)

    @property
    def grpc_tls_target(self) -> str:
        """``host:port`` of the TLS gRPC port (``grpc_tls_port=``): an unchanged client's ``api_endpoint``."""
        if self._tls_port is None:
            raise RuntimeError("the emulator serves no TLS gRPC port (start it with grpc_tls_port=0)")
        return _host_port(self.host, self._tls_port)

    @property
    def grpc_roots_file(self) -> str:
        """The TLS port's certificate (PEM), for ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``; removed at stop."""
        if self._tls_dir is None:
            raise RuntimeError("the emulator serves no TLS gRPC port (start it with grpc_tls_port=0)")
        return str(Path(self._tls_dir, "roots.pem"))

    def stats(self) -> dict[str, int]:
        """Requests received per API method, e.g. ``{"Jobs.RunJob": 3, "Logging.ListLogEntries": 1}``."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the request counts (and the peak running tasks counter)."""
        self._stats.reset()
        if self._service is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._service.reset_peak)

    def task_stats(self) -> dict[str, int]:
        """Task counters: tasks and attempts started, running now, peak running, log entries held."""
        service, loop = self._service, self._loop
        if service is None or loop is None:
            return {}

        async def read() -> dict[str, int]:
            return service.task_stats()

        return asyncio.run_coroutine_threadsafe(read(), loop).result(_STOP_TIMEOUT)

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults.faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults at runtime (their random streams restart from ``faults.seed``)."""
        self._faults.set(faults)
