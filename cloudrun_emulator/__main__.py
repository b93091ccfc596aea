"""``python -m cloudrun_emulator`` (also ``fanout emulator``): serve the emulator until interrupted."""

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
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from cloudrun_emulator.faults import Faults
from cloudrun_emulator.server import Emulator
from cloudrun_emulator.sources import JobSource, JobSourceError, load_job_sources

log = logging.getLogger("cloudrun_emulator")
PROG = "fanout emulator"


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


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Local Cloud Run Admin API v2 + Cloud Logging entries:list; tasks run as local processes.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="serve on a --host that is not a loopback address, knowing that anyone who can reach the port "
        "can run commands as this user",
    )
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--project", default="local-project")
    parser.add_argument("--region", default="us-central1")
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
        help="what an image without a command runs locally (shell words), repeatable",
    )
    parser.add_argument(
        "--secret",
        action="append",
        type=_secret,
        default=[],
        metavar="SECRET=VALUE",
        help="local value of a Secret Manager secret (short name or full name), repeatable",
    )
    parser.add_argument("--faults", type=Path, default=None, help="fault injection config (YAML or JSON)")
    parser.add_argument("--max-running-tasks", type=int, default=None)
    parser.add_argument("--docker", action="store_true", help="run images without a local command in Docker")
    parser.add_argument("-v", "--verbose", action="store_true", help="log one line per request")
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


def _emulator(args: argparse.Namespace, sources: list[JobSource], faults: Faults | None) -> Emulator:
    local_images = {image: argv for source in sources for image, argv in source.local_images.items()}
    local_images.update({image: shlex.split(command) for image, command in args.image})
    return Emulator(
        [seed for source in sources for seed in source.jobs],
        project=args.project,
        region=args.region,
        host=args.host,
        port=args.port,
        faults=faults,
        local_images=local_images,
        max_running_tasks=args.max_running_tasks,
        use_docker=args.docker,
        secrets=dict(args.secret),
    )


def _banner(emulator: Emulator, args: argparse.Namespace, sources: list[JobSource]) -> str:
    url = emulator.url
    return (
        f"Cloud Run emulator serving {url} (project {args.project}, region {args.region}, "
        f"{_jobs_phrase(sources)}). Point clients at it:\n"
        f"  export FANOUT_EMULATOR_HOST={url}   # for fanout itself\n"
        f"  run_v2.JobsClient(credentials=AnonymousCredentials(), transport='rest',\n"
        f"                    client_options=ClientOptions(api_endpoint='{url}'))\n"
        f"  logging.Client(project='{args.project}', credentials=AnonymousCredentials(), _use_grpc=False,\n"
        f"                 client_options={{'api_endpoint': '{url}'}})\n"
        f"  gcloud config set api_endpoint_overrides/run {url}/\n"
        "Ctrl-C stops it."
    )


def _serve(emulator: Emulator, args: argparse.Namespace, sources: list[JobSource]) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator.start()
        except OSError as exc:
            print(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status (2: bad options or inputs)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not args.verbose:
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    refusal = _exposure(args)
    if refusal is not None:
        print(f"{PROG}: {refusal}", file=sys.stderr)
        return 2
    try:
        faults = Faults.from_file(args.faults) if args.faults else None
        sources = load_job_sources(args.jobs_dir)
    except (OSError, ValueError, ValidationError, JobSourceError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    return _serve(_emulator(args, sources, faults), args, sources)


if __name__ == "__main__":
    sys.exit(main())
