"""Kill-and-resume through the real command: ``fanout run ... --report-to gs://... --batch-id X --quiet``
(Prefect engine and all), SIGKILLed with its whole process group at a random moment once the batch has
begun, then run again to the end. The batch state lives only in GCS (fake-gcs-server) and in the
executions, never on the controller's disk: each run starts in a fresh working directory.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from testenv import report_document

from controller.catalog import Catalog
from controller.plan import plan
from controller.spec import load_batch
from tests.reliability.harness import CloudRunView, EmulatorProcess, check_report, fanout, mixed_spec, wait_for

pytestmark = pytest.mark.slow

BUCKET = "fanout-reports"
TRIALS = 2


@pytest.fixture(scope="module")
def gcs_first(gcs: Any) -> Any:
    """fake-gcs-server before the module's emulator, so task processes inherit STORAGE_EMULATOR_HOST."""
    return gcs


def test_cli_sigkill_and_resume(
    gcs_first: Any, emulator_process: EmulatorProcess, cloud_run: CloudRunView, tmp_path: Path, figures: Any
) -> None:
    assert os.environ.get("STORAGE_EMULATOR_HOST")
    rng = random.Random(42)
    bucket = gcs_first.bucket(BUCKET)
    catalog = Catalog.from_jobs_dir()
    duplicates = lost = complete = 0
    started = time.monotonic()
    for trial_no in range(TRIALS):
        trial = mixed_spec(rng, f"cli-kill-{trial_no}", hello=6, flaky=3, multi_task=2, one_off=3, max_sleep=3.0)
        spec = trial.write(tmp_path)
        launches = len(plan(load_batch(spec, catalog), catalog).launches)
        before = emulator_process.stats()["executions_started"]
        args = ["run", str(spec), "--emulator", emulator_process.url, "--report-to", f"gs://{BUCKET}/rel"]
        args += ["--batch-id", trial.batch_id, "--quiet", "--poll-interval", "0.3"]  # polls, not the claim
        for run in (1, 2):
            workdir = tmp_path / f"{trial.batch_id}-{run}"
            workdir.mkdir()
            proc = fanout(args, cwd=workdir)
            if run == 1:
                # Once the batch has begun (its state is in GCS), anywhere in the next few seconds.
                state = bucket.blob(f"rel/{trial.batch_id}/batch.json")

                def begun(state: Any = state, proc: Any = proc) -> bool:
                    assert proc.poll() is None, proc.communicate()
                    return _exists(state)

                wait_for(begun, 300, 0.3, "batch.json")
                time.sleep(rng.uniform(0.0, 4.0))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=30)
                continue
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 1, (out, err)  # some items fail by design
            assert "Traceback" not in err
        report = report_document(f"gs://{bucket.name}/rel/{trial.batch_id}", bucket.client)
        keys = {launch["key"] for launch in report["launches"]}  # they carry the nonce made with batch.json
        assert len(keys) == launches
        by_key = cloud_run.by_key(trial.batch_id)
        problems = check_report(report, trial, by_key)
        started_here = emulator_process.stats()["executions_started"] - before
        dup = max(sum(len(r) - 1 for r in by_key.values()), started_here - len(keys))
        duplicates += dup
        lost += sum(1 for p in problems if "missing" in p or "not_launched" in p)
        complete += not problems and set(by_key) == keys and not dup
        assert not problems, problems
        assert set(by_key) == keys
        assert dup == 0
    figures("kill/resume trials (fanout run, gs:// reports)", f"{TRIALS} trials in {time.monotonic() - started:.1f}s")
    figures("kill/resume (fanout run): complete / duplicates / lost", f"{complete}/{TRIALS} / {duplicates} / {lost}")


def _exists(blob: Any) -> bool:
    try:
        return bool(blob.exists(timeout=10))
    except Exception:  # a slow answer under load: ask again
        return False
