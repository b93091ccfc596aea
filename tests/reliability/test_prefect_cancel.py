"""A Prefect cancellation of a running flow run: the flow is served by a Prefect runner (``fan_out.serve``,
in its own process, as a process worker would run a deployment), a flow run is created from the
deployment, and once its executions run it is set to Cancelling through the Prefect API. The runner then
terminates the flow-run process (SIGTERM), and the flow cancels every execution of the batch through the
Cloud Run API and writes the report with the cancelled items before it exits; if the runner's SIGKILL comes
first, the interim report written before the cancellation lists every item.
"""

from __future__ import annotations

import inspect
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling

from controller.batch import BatchRunner
from controller.outcomes import INTERIM_PROBLEM
from tests.reliability.harness import (
    PROJECT,
    PY,
    REPO,
    CloudRunView,
    EmulatorProcess,
    load_report,
    mixed_spec,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),
]

# After Cancelling, the runner stops the flow-run process and the flow cancels the batch, each step with its
# own bound: RunJob calls in flight, then the executions to stop (BatchRunner.cancel's wait_seconds, each),
# then the report and the final state.
CANCEL_WAIT = inspect.signature(BatchRunner.cancel).parameters["wait_seconds"].default
ENDED_AFTER_CANCEL = 2 * CANCEL_WAIT + 60.0
PROCESS_START = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])  # tests/conftest.py

SERVE = "from controller.flow import fan_out; fan_out.serve(name='reliability', limit=2, print_starting_message=False)"


def test_prefect_cancellation_cancels_every_execution(
    emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: Any
) -> None:
    batch_id = "cancel-prefect"
    trial = mixed_spec(
        random.Random(5), batch_id, hello=4, flaky=2, multi_task=1, one_off=2, min_sleep=60, max_sleep=61
    )
    spec = trial.write(tmp_path)
    reports = tmp_path / "reports"
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "FANOUT_EMULATOR_HOST": emulator_process.url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    log = (tmp_path / "runner.log").open("w")
    runner = subprocess.Popen(
        [PY, "-c", SERVE], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        with get_client(sync_client=True) as client:
            wait_for(lambda: _deployment_exists(client), 90, 0.5, "the served deployment")
            flow_run = run_deployment(
                "fan-out/reliability",
                parameters={"batch": str(spec), "project": PROJECT, "report_to": str(reports), "poll_interval": 0.5},
                timeout=0,
            )

            def started() -> bool:
                assert not _final_state(client, flow_run.id), (tmp_path / "runner.log").read_text()[-3000:]
                return len([e for e in cloud_run.running(batch_id) if e.running]) >= 4

            # The runner starts a flow-run process (Prefect's imports: a minute on a loaded 2-core machine), which
            # launches; its tasks sleep 60 s, so the wait ends long before any of them could end by itself.
            wait_for(started, PROCESS_START, 0.3, "executions")
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
            said_at = time.monotonic()
            final = wait_for(lambda: _final_state(client, flow_run.id), ENDED_AFTER_CANCEL, 0.5, "the flow run to end")
        ended_after = time.monotonic() - said_at
        running = cloud_run.running(batch_id)
        executions = cloud_run.all_executions(batch_id)
        report = load_report(reports, batch_id)
        states = sorted({item["state"] for item in report["items"]})
        # Prefect's runner SIGKILLs the flow-run process 30 s after its SIGTERM; a loaded machine can reach
        # that before the final report, and then the interim one stands (controller.flow._stop).
        interim = report["problems"][:1] == [INTERIM_PROBLEM]
        figures(
            "cancel (Prefect): flow run / executions running after it ended / report",
            f"{final.name} after {ended_after:.1f}s / {len(running)} of {len(executions)} / "
            f"{'interim' if interim else 'final'}, {report['status']} {states}",
        )
        assert final.is_cancelled(), final
        assert not running, [e.name for e in running]
        assert report["status"] == "cancelled" and len(report["items"]) == len(trial.expected)
        assert set(states) <= ({"failed", "not_launched"} if interim else {"cancelled", "not_launched"})
    finally:
        runner.terminate()
        try:
            runner.wait(30)
        except subprocess.TimeoutExpired:
            runner.kill()
        log.close()


def _deployment_exists(client: Any) -> bool:
    try:
        client.read_deployment_by_name("fan-out/reliability")
    except Exception:
        return False
    return True


def _final_state(client: Any, flow_run_id: Any) -> Any:
    state = client.read_flow_run(flow_run_id).state
    return state if state is not None and state.is_final() else None
