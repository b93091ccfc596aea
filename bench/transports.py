"""The emulator's two transports side by side: the same calls through google-cloud-run's REST transport and
its default gRPC transport, against one emulator process, in one run.

    .venv/bin/python -m bench.transports [--calls 400]

Prints calls per second for each transport and call, and gRPC's rate as a ratio of REST's. The emulator
serves both from one dispatcher, so the ratio is what the transports themselves cost (HTTP/1.1 + JSON vs
HTTP/2 + protobuf, on both sides).
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport
from google.cloud.run_v2.services.tasks.transports import TasksGrpcTransport

from bench.emulator import PROJECT, REGION, emulator

PARENT = f"projects/{PROJECT}/locations/{REGION}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rate(call: Callable[[], Any], calls: int) -> float:
    call()  # connection set up and first-call costs out of the measurement
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return calls / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per transport and method (default: 400)")
    args = parser.parse_args(argv)
    grpc_port = _free_port()
    with emulator(8, simulate=True, grpc_port=grpc_port) as url:
        options = ClientOptions(api_endpoint=url)
        anonymous = AnonymousCredentials()
        rest_jobs = run_v2.JobsClient(credentials=anonymous, transport="rest", client_options=options)
        rest_tasks = run_v2.TasksClient(credentials=anonymous, transport="rest", client_options=options)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        grpc_jobs = run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel))
        grpc_tasks = run_v2.TasksClient(transport=TasksGrpcTransport(channel=channel))
        container = run_v2.Container(image="example.com/bench:1", args=["sim-seconds=0"])
        template = run_v2.ExecutionTemplate(task_count=100, template=run_v2.TaskTemplate(containers=[container]))
        job = rest_jobs.create_job(parent=PARENT, job_id="transports", job=run_v2.Job(template=template)).result()
        execution = rest_jobs.run_job(name=job.name).result(timeout=120)
        list_100 = run_v2.ListTasksRequest(parent=execution.name, page_size=100)
        rows = [
            ("GetJob", lambda c: _rate(lambda: c[0].get_job(name=job.name), args.calls)),
            ("ListTasks (100 tasks)", lambda c: _rate(lambda: c[1].list_tasks(request=list_100), args.calls // 4)),
        ]
        print(f"{'call':<24}{'REST calls/s':>14}{'gRPC calls/s':>14}{'gRPC / REST':>13}")
        for name, measure in rows:
            rest, over_grpc = measure((rest_jobs, rest_tasks)), measure((grpc_jobs, grpc_tasks))
            print(f"{name:<24}{rest:>14.0f}{over_grpc:>14.0f}{over_grpc / rest:>13.2f}")
        channel.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
