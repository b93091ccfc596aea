"""A flow deployed to a Cloud Run work pool runs as a Cloud Run job, on the emulator, through prefect-gcp's own
Cloud Run v2 worker (unpatched), as the ``fanout-cloud-run-v2`` worker type: its endpoint a job variable.

The worker creates the Cloud Run job from prefect-gcp's job template, runs it and watches the execution; the
emulator runs the job's container command, ``prefect flow-run execute``, as a local process (the command is a
job variable, as a user may set it; the image is only a name here); that process runs the flow and reports
its state and logs to the Prefect server, where the test reads them back.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import logging as gcl
from testenv import PROJECT, REGION

from cloudrun_emulator import Emulator
from controller.cloud_run_worker import WORKER_TYPE, FanoutCloudRunWorker

pytestmark = pytest.mark.slow(minutes=1)

FLOW = """
import os
from prefect import flow, get_run_logger

@flow(name="cloud-run-hello")
def hello(n: int) -> int:
    print(f"hello from Cloud Run job {os.environ['CLOUD_RUN_JOB']} task {os.environ['CLOUD_RUN_TASK_INDEX']}",
          flush=True)
    get_run_logger().info("doubling %s", n)
    return n * 2
"""


def test_the_worker_type_is_registered_with_prefect() -> None:
    from prefect.plugins import load_prefect_collections
    from prefect.workers.base import BaseWorker

    assert "fanout" in load_prefect_collections()
    assert BaseWorker.get_worker_class_from_type(WORKER_TYPE) is FanoutCloudRunWorker
    template = FanoutCloudRunWorker.get_default_base_job_template()
    assert template["job_configuration"]["api_endpoint"] == "{{ api_endpoint }}"
    assert template["variables"]["properties"]["api_endpoint"]["default"] == "https://run.googleapis.com"


async def _deploy_and_run(emu: Emulator, code_dir: Path, pool: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        await client.create_work_pool(
            WorkPoolCreate(
                name=pool, type=WORKER_TYPE, base_job_template=FanoutCloudRunWorker.get_default_base_job_template()
            )
        )
        flow_id = await client.create_flow_from_name("cloud-run-hello")
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name="on-cloud-run",
            work_pool_name=pool,
            entrypoint="hello_flow.py:hello",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(code_dir)}}],
            job_variables={
                "api_endpoint": emu.url,
                "project_id": PROJECT,
                "region": REGION,
                "image": "example.com/fanout-flow:1",
                "command": f"{sys.executable} -m prefect flow-run execute",
                # The bound of a hung flow-run process: Cloud Run (the emulator) ends the task past it, and the
                # worker's watch with it.
                "timeout": 300,
            },
        )
        flow_run = await client.create_flow_run_from_deployment(deployment_id, parameters={"n": 21})
    # The worker as `prefect worker start --pool POOL` runs it, for one poll; leaving the block waits for the
    # runs it submitted, each until its Cloud Run execution has ended.
    async with FanoutCloudRunWorker(work_pool_name=pool) as worker:
        submitted = await worker.get_and_submit_flow_runs()
    assert [run.id for run in submitted] == [flow_run.id]
    async with get_client() as client:
        return await client.read_flow_run(flow_run.id), await _logs(client, flow_run.id)


async def _logs(client: Any, flow_run_id: Any) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    found = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in found]


def test_a_flow_on_a_cloud_run_pool_runs_as_a_cloud_run_job_on_the_emulator(
    prefect_server: None, tmp_path: Path
) -> None:
    (tmp_path / "hello_flow.py").write_text(textwrap.dedent(FLOW))
    with Emulator(project=PROJECT, region=REGION) as emu:
        flow_run, messages = asyncio.run(_deploy_and_run(emu, tmp_path, f"cloud-run-{tmp_path.name}"))
        stats = emu.stats()
        logging = gcl.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            _use_grpc=False,
            client_options={"api_endpoint": emu.url},
        )
        job = flow_run.infrastructure_pid
        printed = [
            str(entry.payload)
            for entry in logging.list_entries(
                filter_=f'resource.type="cloud_run_job" AND resource.labels.job_name="{job}"'
            )
        ]

    # The state came back to the Prefect server from the process the Cloud Run job ran.
    assert flow_run.state.is_completed(), flow_run.state
    assert any("doubling 21" in message for message in messages), messages
    # It ran as that Cloud Run job: created, run and (prefect-gcp's default) deleted through the emulator.
    assert job
    assert f"hello from Cloud Run job {job} task 0" in printed, printed
    assert (stats.get("Jobs.CreateJob"), stats.get("Jobs.RunJob"), stats.get("Jobs.DeleteJob")) == (1, 1, 1), stats
