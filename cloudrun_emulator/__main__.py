"""``python -m cloudrun_emulator`` (``fanout emulator`` is the same command): serve until interrupted."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from cloudrun_emulator.faults import Faults
from cloudrun_emulator.scheduler import DEFAULT_MAX_RUNNING_TASKS
from cloudrun_emulator.server import Emulator
from cloudrun_emulator.sources import JobSource, JobSourceError, load_job_sources

log = logging.getLogger("cloudrun_emulator")
PROG = "python -m cloudrun_emulator"


def _jobs_phrase(sources: list[JobSource]) -> str:
    count = sum(len(source.jobs) for source in sources)
    return f"{count} {'job' if count == 1 else 'jobs'} from {', '.join(s.name for s in sources) or 'no job source'}"


def _pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return name, value


def _image(text: str) -> tuple[str, str]:
    return _pair(text, "IMAGE=COMMAND")


def _secret(text: str) -> tuple[str, str]:
    return _pair(text, "SECRET=VALUE")


def _bucket_dir(text: str) -> tuple[str, str]:
    return _pair(text, "BUCKET=DIR")


def _bounded_int(low: int, high: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


DESCRIPTION = """\
A local stand-in for the Cloud Run Admin API v2 (jobs, executions, tasks,
long-running operations) and Cloud Logging's entries:list. It speaks Google's
HTTP/JSON API and, on a port of its own, the same API over gRPC, so the
official clients work against it with either transport: the REST one with an
api_endpoint override and anonymous credentials, the gRPC one with a
plaintext channel to the gRPC port. Each task runs
as a local process in its own process group; what it prints becomes Cloud Run
job log entries.
"""

EPILOG = """\
examples:
  serve on http://127.0.0.1:8123 until Ctrl-C:
    %(prog)s
  a free port, with injected errors, latency and lost answers:
    %(prog)s --port 0 --faults faults.yaml
  an image's local command and a secret's local value:
    %(prog)s --image example.com/tool:1='python tool.py' \\
        --secret api-token=s3cret

jobs: the jobs that exist at start come from the installed job sources
(entry-point group cloudrun_emulator.job_sources), each given --jobs-dir;
fanout's serves its job catalog. Clients can create more with CreateJob.

what a task runs: the container's command and args; else the image's local
command (--image, or the job source's); else, with --docker, the image in
Docker. The emulator never guesses an image's entrypoint.

security: there is no authentication and tasks run as you, so only loopback
addresses are served unless --allow-remote is given.

More (fault files, /_emulator endpoints, what is emulated): docs/emulator.md
"""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command-line options; each one's help says its default."""
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; loopback only unless --allow-remote (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="serve on a --host that is not a loopback address, knowing that anyone who can reach the port "
        "can run commands as this user (default: refused)",
    )
    parser.add_argument(
        "--port",
        type=_bounded_int(0, 65535),
        default=8123,
        help="port to listen on; 0 picks a free one, printed at start (default: %(default)s)",
    )
    parser.add_argument(
        "--grpc-port",
        type=_bounded_int(0, 65535),
        default=None,
        help="port of the gRPC server (the same API over gRPC); 0 picks a free one, printed at start "
        "(default: --port + 1, or a free one when --port is 0)",
    )
    parser.add_argument(
        "--grpc-tls-port",
        type=_bounded_int(0, 65535),
        default=None,
        help="port of the gRPC server with TLS, a self-signed certificate made at start whose file is printed "
        "(for clients left unchanged: trust it with GRPC_DEFAULT_SSL_ROOTS_FILE_PATH); 0 picks a free one "
        "(default: --port + 2, or a free one when --port is 0)",
    )
    parser.add_argument("--project", default="local-project", help="project of the catalog jobs (default: %(default)s)")
    parser.add_argument("--region", default="us-central1", help="region of the catalog jobs (default: %(default)s)")
    parser.add_argument(
        "--jobs-dir",
        type=Path,
        default=None,
        help="folder of job definitions, handed to the installed job sources (default: each source's own)",
    )
    parser.add_argument(
        "--image",
        action="append",
        type=_image,
        default=[],
        metavar="IMAGE=COMMAND",
        help="what an image without a command runs locally, as shell words; repeatable (default: none)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        type=_secret,
        default=[],
        metavar="SECRET=VALUE",
        help="local value of a Secret Manager secret, by short or full name; repeatable (default: none, so a "
        "task that needs one fails, saying which)",
    )
    parser.add_argument(
        "--bucket-dir",
        action="append",
        type=_bucket_dir,
        default=[],
        metavar="BUCKET=DIR",
        help="a local folder that stands for a Cloud Storage bucket in tasks' gcs volumes; repeatable (default: "
        "none, so gcs volumes sync with STORAGE_EMULATOR_HOST, else Cloud Storage)",
    )
    parser.add_argument(
        "--faults",
        type=Path,
        default=None,
        metavar="FILE",
        help="fault injection settings, YAML or JSON; also settable at runtime with POST /_emulator/faults "
        "(default: no faults)",
    )
    parser.add_argument(
        "--max-running-tasks",
        type=_bounded_int(1, None),
        default=DEFAULT_MAX_RUNNING_TASKS,
        metavar="N",
        help="tasks running at once across all executions (default: %(default)s)",
    )
    parser.add_argument(
        "--docker",
        action="store_true",
        help="run images without a local command in Docker, if an engine answers (default: off)",
    )
    parser.add_argument(
        "--simulate-tasks",
        action="store_true",
        help="start no process: each task attempt runs sim-seconds=S and exits sim-exit=N from its arguments "
        "(defaults 0 and 0); for controller scale benchmarks only (default: off)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log one line per request to stderr (default: off)"
    )
    return parser


class HostError(ValueError):
    """--host names no address this machine can listen on."""


def remote_addresses(host: str) -> list[str]:
    """The addresses ``host`` stands for that are not loopback ones (empty: local to this machine only)."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError) as exc:
        raise HostError(f"--host {host!r} cannot be resolved: {exc}") from None
    return sorted(a for a in addresses if not ipaddress.ip_address(a.split("%", 1)[0]).is_loopback)


def _exposure(args: argparse.Namespace) -> str | None:
    """An error message that refuses a non-loopback host, or None; warns when --allow-remote accepts one."""
    try:
        remote = remote_addresses(args.host)
    except HostError as exc:
        return str(exc)
    if not remote:
        return None
    unspecified = any(ipaddress.ip_address(a.split("%", 1)[0]).is_unspecified for a in remote)
    where = "every network interface" if unspecified else ", ".join(remote)
    problem = f"--host {args.host} is not a loopback address: the emulator would listen on {where}"
    port = f"port {args.port}" if args.port else "its port"
    danger = (
        f"anyone who can reach {port} can run any command on this machine as {getpass.getuser()} "
        "(the emulator has no authentication and runs whatever a job's container asks for)"
    )
    if not args.allow_remote:
        return f"{problem}, and {danger}. Serve on 127.0.0.1 (the default), or pass --allow-remote if you mean it."
    print(f"WARNING: {problem}; {danger}.", file=sys.stderr, flush=True)
    return None


def _grpc_port(args: argparse.Namespace, option: str = "grpc_port", offset: int = 1) -> int:
    """A gRPC port option's value: as given, else ``--port`` + ``offset``, else (``--port 0``) a free one."""
    given = getattr(args, option)
    if given is not None:
        return int(given)
    return args.port + offset if args.port and args.port + offset <= 65535 else 0


def _emulator(args: argparse.Namespace, sources: list[JobSource], faults: Faults | None) -> Emulator:
    local_images = {image: argv for source in sources for image, argv in source.local_images.items()}
    local_images.update({image: shlex.split(command) for image, command in args.image})
    return Emulator(
        [seed for source in sources for seed in source.jobs],
        project=args.project,
        region=args.region,
        host=args.host,
        port=args.port,
        grpc_port=_grpc_port(args),
        grpc_tls_port=_grpc_port(args, "grpc_tls_port", 2),
        faults=faults,
        local_images=local_images,
        max_running_tasks=args.max_running_tasks,
        use_docker=args.docker,
        secrets=dict(args.secret),
        simulate=args.simulate_tasks,
        local_buckets=dict(args.bucket_dir),
    )


def _banner(emulator: Emulator, args: argparse.Namespace, sources: list[JobSource]) -> str:
    url, target, tls = emulator.url, emulator.grpc_target, emulator.grpc_tls_target
    return (
        f"Cloud Run emulator serving {url} (REST) and {target} (gRPC, plaintext) (project {args.project}, "
        f"region {args.region}, {_jobs_phrase(sources)}). Point clients at it:\n"
        f"  export FANOUT_EMULATOR_HOST={url}   # for fanout itself\n"
        "REST:\n"
        f"  run_v2.JobsClient(credentials=AnonymousCredentials(), transport='rest',\n"
        f"                    client_options=ClientOptions(api_endpoint='{url}'))\n"
        f"  logging.Client(project='{args.project}', credentials=AnonymousCredentials(), _use_grpc=False,\n"
        f"                 client_options={{'api_endpoint': '{url}'}})\n"
        f"  gcloud config set api_endpoint_overrides/run {url}/\n"
        "gRPC (the clients' default transport), over a plaintext channel:\n"
        f"  run_v2.JobsClient(transport=JobsGrpcTransport(channel=grpc.insecure_channel('{target}')))\n"
        f"  LoggingServiceV2Client(\n"
        f"      transport=LoggingServiceV2GrpcTransport(channel=grpc.insecure_channel('{target}')))\n"
        "  Node: new JobsClient({apiEndpoint, port, sslCreds: grpc.credentials.createInsecure()})\n"
        f"gRPC with TLS at {tls} (self-signed), for clients left unchanged but for endpoint and credentials:\n"
        f"  export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={emulator.grpc_roots_file}\n"
        f"  run_v2.JobsClient(credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint='{tls}'))\n"
        f"  logging.Client(project='{args.project}', credentials=AnonymousCredentials(),\n"
        f"                 client_options={{'api_endpoint': '{tls}'}})\n"
        "Ctrl-C stops it."
    )


def _serve(emulator: Emulator, args: argparse.Namespace, sources: list[JobSource], prog: str) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator.start()
        except OSError as exc:
            # The gRPC ports' errors name their port; the HTTP socket's are the OS's own.
            where = "" if "gRPC" in str(exc) else f" on {args.host}:{args.port}"
            print(f"{prog}: cannot listen{where}: {exc}", file=sys.stderr)
            return 1
        print(_banner(emulator, args, sources), flush=True)
        # Wake up now and then: a signal handler only runs between bytecodes of the main thread.
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Cloud Run emulator stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status (2: bad options or inputs)."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not args.verbose:
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    refusal = _exposure(args)
    if refusal is not None:
        print(f"{prog}: {refusal}", file=sys.stderr)
        return 2
    try:
        faults = Faults.from_file(args.faults) if args.faults else None
        sources = load_job_sources(args.jobs_dir)
    except (OSError, ValueError, ValidationError, JobSourceError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return _serve(_emulator(args, sources, faults), args, sources, prog)


if __name__ == "__main__":
    sys.exit(main())
