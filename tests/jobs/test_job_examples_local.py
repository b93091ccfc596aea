"""Every example in jobs/*/job.yaml, run through the job's local entrypoint (runner included) the way
Cloud Run would run one task: attempts up to max_retries + 1, each killed at the task timeout."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from controller.catalog import Catalog, JobDefinition, JobExample

CATALOG = Catalog.from_jobs_dir()
EXAMPLES = [(job, number, example) for job in CATALOG for number, example in enumerate(job.examples)]


@dataclass
class Outcome:
    state: str
    exit_code: int | None
    attempts: int
    output: str


def run_task(job: JobDefinition, example: JobExample) -> Outcome:
    # An example that lists args (even none) replaces the job's, as a RunJob args override does.
    args = example.args if "args" in example.model_fields_set else job.args
    argv = [*CATALOG.local_images()[job.image], *args]
    timeout = example.timeout_seconds or job.timeout_seconds
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUD_RUN_", "FANOUT_"))}
    output = ""
    code: int | None = None
    for attempt in range(job.max_retries + 1):
        env = {
            **base,
            **job.env,
            **example.env,
            "CLOUD_RUN_JOB": job.name,
            "CLOUD_RUN_EXECUTION": f"{job.name}-local",
            "CLOUD_RUN_TASK_INDEX": "0",
            "CLOUD_RUN_TASK_COUNT": "1",
            "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
        }
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            output += (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            code = None
            continue
        output += done.stdout + done.stderr
        code = done.returncode
        if code == 0:
            return Outcome("succeeded", 0, attempt + 1, output)
    return Outcome("timed_out" if code is None else "failed", code, job.max_retries + 1, output)


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, int], Outcome]:
    """All examples at once: most of them wait on a sleep or a timeout, not on the CPU."""
    with ThreadPoolExecutor(max_workers=len(EXAMPLES)) as pool:
        futures = {(job.name, n): pool.submit(run_task, job, example) for job, n, example in EXAMPLES}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize(
    ("job", "number", "example"),
    EXAMPLES,
    ids=[f"{job.name}-{number}-{example.outcome}" for job, number, example in EXAMPLES],
)
def test_example_has_the_promised_outcome(outcomes, job, number, example):
    outcome = outcomes[job.name, number]

    assert outcome.state == example.outcome, outcome.output
    if example.exit_code is not None:
        assert outcome.exit_code == example.exit_code, outcome.output
    if example.output_contains is not None:
        assert example.output_contains in outcome.output


def test_every_job_shows_success_failure_and_timeout():
    for job in CATALOG:
        assert {example.outcome for example in job.examples} == {"succeeded", "failed", "timed_out"}, job.name
        assert job.packable, job.name
