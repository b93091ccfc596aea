"""The emulator through the official google-cloud-run clients (REST transport, anonymous credentials)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.rpc import code_pb2

from cloudrun_emulator import Emulator
from controller.catalog import Catalog, JobDefinition, SecretRef
from controller.emulator_jobs import catalog_emulator
from tests.emulator.conftest import FAST_POLL, PY, Clients, wait_until

Condition = run_v2.Condition
Overrides = run_v2.RunJobRequest.Overrides
ContainerOverride = Overrides.ContainerOverride

# Writes what the task saw (env, argv, pid) to $OUT/<index>-<attempt>.json, then exits with $EXIT_<index>.
RECORDER = """
import json, os, sys, time
index, attempt = os.environ["CLOUD_RUN_TASK_INDEX"], os.environ["CLOUD_RUN_TASK_ATTEMPT"]
path = os.path.join(os.environ["OUT"], f"{index}-{attempt}")
with open(path + ".tmp", "w") as f:
    json.dump({"env": dict(os.environ), "argv": sys.argv[1:], "pid": os.getpid(), "start": time.time()}, f)
os.replace(path + ".tmp", path + ".json")  # whole, so a test reading it while the task runs never sees half
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(int(os.environ.get("EXIT_" + index, "0")))
"""


def _completed(execution: run_v2.Execution | run_v2.Task) -> run_v2.Condition:
    return next(c for c in execution.conditions if c.type_ == "Completed")


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_run_with_overrides_reports_counts_exit_codes_conditions_and_env(clients: Clients, tmp_path: Path) -> None:
    clients.create_job("recorder", RECORDER, task_count=1, env={"OUT": str(tmp_path), "FROM_JOB": "job"})
    override = ContainerOverride(
        args=["--item", "7"],
        env=[run_v2.EnvVar(name="FANOUT_LAUNCH_KEY", value="batch-1/0"), run_v2.EnvVar(name="EXIT_1", value="3")],
    )
    operation = clients.run("recorder", container_overrides=[override], task_count=3, timeout="20s")

    # RunJob answers at once, with the Execution as metadata; the operation is done when the execution is.
    started = operation.metadata
    assert started.name.startswith(f"{clients.parent}/jobs/recorder/executions/recorder-")
    with pytest.raises(exceptions.FailedPrecondition) as failure:
        operation.result(timeout=20, polling=FAST_POLL)
    task1 = f"{started.name.rsplit('/', 1)[-1]}-task1"
    assert f"Task {task1} failed with message: The container exited with an error." in str(failure.value)

    execution = clients.executions.get_execution(name=started.name)
    assert (execution.task_count, execution.succeeded_count, execution.failed_count) == (3, 2, 1)
    assert (execution.running_count, execution.cancelled_count, execution.retried_count) == (0, 0, 0)
    assert execution.start_time
    assert execution.completion_time >= execution.start_time
    completed = _completed(execution)
    assert completed.state == Condition.State.CONDITION_FAILED
    assert completed.execution_reason == Condition.ExecutionReason.NON_ZERO_EXIT_CODE
    container = execution.template.containers[0]
    assert list(container.args) == ["--item", "7"]
    assert {e.name: e.value for e in container.env}["FANOUT_LAUNCH_KEY"] == "batch-1/0"
    assert execution.template.timeout.total_seconds() == 20
    assert execution.log_uri
    assert execution.etag

    tasks = clients.tasks_of(execution.name)
    assert [t.index for t in tasks] == [0, 1, 2]
    assert [t.last_attempt_result.exit_code for t in tasks] == [0, 3, 0]
    assert tasks[1].last_attempt_result.status.message == "The container exited with an error."
    assert [_completed(t).state for t in tasks] == [
        Condition.State.CONDITION_SUCCEEDED,
        Condition.State.CONDITION_FAILED,
        Condition.State.CONDITION_SUCCEEDED,
    ]
    assert all(t.start_time and t.completion_time for t in tasks)

    seen = _records(tmp_path)
    assert sorted(seen) == ["0-0", "1-0", "2-0"]
    env = seen["2-0"]["env"]
    assert env["CLOUD_RUN_JOB"] == "recorder"
    assert env["CLOUD_RUN_EXECUTION"] == execution.name.rsplit("/", 1)[-1]
    assert (env["CLOUD_RUN_TASK_INDEX"], env["CLOUD_RUN_TASK_COUNT"], env["CLOUD_RUN_TASK_ATTEMPT"]) == ("2", "3", "0")
    assert (env["FANOUT_LAUNCH_KEY"], env["FROM_JOB"]) == ("batch-1/0", "job")
    assert seen["2-0"]["argv"] == ["--item", "7"]
    # Only a minimal host environment leaks into tasks, not the test runner's.
    assert "PYTEST_CURRENT_TEST" not in env
    assert set(env) <= {
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "STORAGE_EMULATOR_HOST",
        "OUT",
        "FROM_JOB",
        "FANOUT_LAUNCH_KEY",
        "EXIT_1",
        "CLOUD_RUN_JOB",
        "CLOUD_RUN_EXECUTION",
        "CLOUD_RUN_TASK_INDEX",
        "CLOUD_RUN_TASK_COUNT",
        "CLOUD_RUN_TASK_ATTEMPT",
    }


def test_successful_operation_result_is_the_finished_execution(clients: Clients, tmp_path: Path) -> None:
    clients.create_job("ok", RECORDER, task_count=2, env={"OUT": str(tmp_path)})
    execution = clients.run("ok").result(timeout=20, polling=FAST_POLL)
    assert isinstance(execution, run_v2.Execution)
    assert (execution.succeeded_count, execution.failed_count, execution.task_count) == (2, 0, 2)
    assert _completed(execution).state == Condition.State.CONDITION_SUCCEEDED
    job = clients.jobs.get_job(name=f"{clients.parent}/jobs/ok")
    assert job.execution_count == 1
    assert job.latest_created_execution.name == execution.name.rsplit("/", 1)[-1]
    status = run_v2.ExecutionReference.CompletionStatus.EXECUTION_SUCCEEDED
    assert job.latest_created_execution.completion_status == status


def test_clear_args_drops_the_job_args(clients: Clients, tmp_path: Path) -> None:
    out = tmp_path / "argv.jsonl"
    code = f"import json, sys; open({str(out)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')"
    job = run_v2.Job(
        template=run_v2.ExecutionTemplate(
            template=run_v2.TaskTemplate(
                containers=[run_v2.Container(image="i", command=[PY, "-c", code], args=["job-arg"])],
                max_retries=0,
            )
        )
    )
    clients.jobs.create_job(parent=clients.parent, job=job, job_id="args").result()
    clients.run("args", container_overrides=[ContainerOverride(clear_args=True)]).result(timeout=20, polling=FAST_POLL)
    clients.run("args").result(timeout=20, polling=FAST_POLL)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [[], ["job-arg"]]


def test_list_executions_newest_first_with_paging_finds_the_launch_key(clients: Clients, tmp_path: Path) -> None:
    clients.create_job("keys", "pass")
    names = []
    for i in range(5):
        env = [run_v2.EnvVar(name="FANOUT_LAUNCH_KEY", value=f"key-{i}")]
        names.append(clients.run("keys", container_overrides=[ContainerOverride(env=env)]).metadata.name)
    pager = clients.executions.list_executions(
        request=run_v2.ListExecutionsRequest(parent=f"{clients.parent}/jobs/keys", page_size=2)
    )
    pages = list(pager.pages)
    assert [len(p.executions) for p in pages] == [2, 2, 1]
    listed = [e for p in pages for e in p.executions]
    assert [e.name for e in listed] == names[::-1]
    keys = [{v.name: v.value for v in e.template.containers[0].env}["FANOUT_LAUNCH_KEY"] for e in listed]
    assert keys == [f"key-{i}" for i in range(4, -1, -1)]


def test_jobs_and_tasks_paging(clients: Clients) -> None:
    for i in range(5):
        clients.create_job(f"job-{i}", "pass")
    pages = list(clients.jobs.list_jobs(request=run_v2.ListJobsRequest(parent=clients.parent, page_size=2)).pages)
    assert [len(p.jobs) for p in pages] == [2, 2, 1]
    assert [j.name.rsplit("/", 1)[-1] for p in pages for j in p.jobs] == [f"job-{i}" for i in range(5)]
    assert not pages[-1].next_page_token

    execution = clients.run("job-0", task_count=5).result(timeout=20, polling=FAST_POLL)
    pages = list(clients.tasks.list_tasks(request=run_v2.ListTasksRequest(parent=execution.name, page_size=2)).pages)
    assert [[t.index for t in p.tasks] for p in pages] == [[0, 1], [2, 3], [4]]
    one = clients.tasks.get_task(name=pages[1].tasks[0].name)
    assert one.index == 2
    assert one.execution == execution.name.rsplit("/", 1)[-1]
    assert one.job == "job-0"


def test_parallelism_is_never_exceeded(emu: Emulator, clients: Clients, tmp_path: Path) -> None:
    clients.create_job("par", RECORDER, task_count=6, parallelism=2, env={"OUT": str(tmp_path), "SLEEP": "0.3"})
    execution = clients.run("par").result(timeout=30, polling=FAST_POLL)
    assert execution.succeeded_count == 6
    assert execution.parallelism == 2
    assert emu.task_stats()["peak_running_tasks"] == 2
    starts = sorted(r["start"] for r in _records(tmp_path).values())
    # With two at a time and 0.3 s each, the third task cannot start before the first two have ended.
    assert starts[2] - starts[0] >= 0.25


def test_global_running_task_cap(tmp_path: Path) -> None:
    with Emulator(max_running_tasks=3, kill_grace_seconds=0.2) as emulator:
        clients = Clients(emulator)
        clients.create_job("cap", RECORDER, task_count=7, env={"OUT": str(tmp_path), "SLEEP": "0.2"})
        assert clients.run("cap").result(timeout=30, polling=FAST_POLL).succeeded_count == 7
        assert emulator.task_stats()["peak_running_tasks"] == 3


def test_task_past_its_timeout_is_killed_and_counted_failed(clients: Clients, tmp_path: Path) -> None:
    clients.create_job("slow", RECORDER, timeout="1s", env={"OUT": str(tmp_path), "SLEEP": "30"})
    operation = clients.run("slow")
    with pytest.raises(exceptions.FailedPrecondition, match="The configured timeout was reached"):
        operation.result(timeout=15, polling=FAST_POLL)
    execution = clients.executions.get_execution(name=operation.metadata.name)
    assert (execution.failed_count, execution.succeeded_count) == (1, 0)
    assert execution.completion_time.timestamp() - execution.start_time.timestamp() < 5
    (task,) = clients.tasks_of(execution.name)
    assert task.last_attempt_result.status.code == code_pb2.DEADLINE_EXCEEDED
    assert task.last_attempt_result.status.message == "The configured timeout was reached."
    assert task.last_attempt_result.exit_code == 0
    assert _completed(task).state == Condition.State.CONDITION_FAILED
    assert _gone(_records(tmp_path)["0-0"]["pid"])


def test_failed_task_is_retried_until_max_retries(clients: Clients, tmp_path: Path) -> None:
    clients.create_job("flaky", RECORDER, task_count=2, max_retries=2, env={"OUT": str(tmp_path), "EXIT_1": "5"})
    operation = clients.run("flaky")
    with pytest.raises(exceptions.FailedPrecondition):
        operation.result(timeout=20, polling=FAST_POLL)
    assert sorted(_records(tmp_path)) == ["0-0", "1-0", "1-1", "1-2"]
    execution = clients.executions.get_execution(name=operation.metadata.name)
    assert (execution.succeeded_count, execution.failed_count, execution.retried_count) == (1, 1, 1)
    task0, task1 = clients.tasks_of(execution.name)
    assert (task0.retried, task1.retried) == (0, 2)
    assert task1.last_attempt_result.exit_code == 5


def test_task_that_succeeds_on_retry_succeeds(clients: Clients, tmp_path: Path) -> None:
    code = RECORDER.replace('int(os.environ.get("EXIT_" + index, "0"))', "0 if attempt == '1' else 9")
    clients.create_job("second-time", code, max_retries=3, env={"OUT": str(tmp_path)})
    execution = clients.run("second-time").result(timeout=20, polling=FAST_POLL)
    assert (execution.succeeded_count, execution.failed_count, execution.retried_count) == (1, 0, 1)
    (task,) = clients.tasks_of(execution.name)
    assert task.retried == 1
    assert task.last_attempt_result.exit_code == 0


def test_cancel_kills_running_tasks_and_cancels_the_rest(emu: Emulator, clients: Clients, tmp_path: Path) -> None:
    clients.create_job("long", RECORDER, task_count=4, parallelism=2, env={"OUT": str(tmp_path), "SLEEP": "60"})
    run = clients.run("long")
    name = run.metadata.name
    clients.wait_for(name, lambda e: e.running_count == 2)
    wait_until(lambda: len(_records(tmp_path)) == 2, what="two tasks to start")
    cancelled = clients.executions.cancel_execution(name=name).result(timeout=15, polling=FAST_POLL)
    assert cancelled.cancelled_count == 4
    assert (cancelled.succeeded_count, cancelled.failed_count, cancelled.running_count) == (0, 0, 0)
    completed = _completed(cancelled)
    assert completed.execution_reason == Condition.ExecutionReason.CANCELLED
    # The RunJob operation ends without an error: the execution was cancelled, not failed.
    assert run.result(timeout=5, polling=FAST_POLL).cancelled_count == 4
    assert all(_gone(r["pid"]) for r in _records(tmp_path).values())
    assert emu.task_stats()["running_processes"] == 0
    tasks = clients.tasks_of(name)
    assert [_completed(t).execution_reason for t in tasks] == [Condition.ExecutionReason.CANCELLED] * 4

    clients.executions.delete_execution(name=name).result(timeout=10, polling=FAST_POLL)
    with pytest.raises(exceptions.NotFound):
        clients.executions.get_execution(name=name)
    clients.jobs.delete_job(name=f"{clients.parent}/jobs/long").result(timeout=10, polling=FAST_POLL)
    with pytest.raises(exceptions.NotFound):
        clients.jobs.get_job(name=f"{clients.parent}/jobs/long")


def test_a_stopping_emulator_stops_answering_before_it_ends_its_executions(
    emu: Emulator, clients: Clients, tmp_path: Path
) -> None:
    """Cloud Run does not stop. A client asking while the emulator stops finds nobody answering (Cloud Run
    lost: tests/reliability/test_cloud_lost.py), never its execution ended by the emulator's own stop."""
    clients.create_job("long", RECORDER, env={"OUT": str(tmp_path), "SLEEP": "60"})
    name = clients.run("long").metadata.name
    wait_until(lambda: len(_records(tmp_path)) == 1, what="the task to start")
    stopping = threading.Thread(target=emu.stop)
    stopping.start()
    answers: list[dict[str, Any]] = []
    try:
        while True:  # as fast as it answers, until it does not
            with urllib.request.urlopen(f"{emu.url}/v2/{name}", timeout=30) as response:
                answers.append(json.loads(response.read()))
    except OSError:  # refused: nobody listens any more
        pass
    stopping.join(30)
    assert answers, "no answer before the stop"
    assert [(a.get("runningCount"), a.get("cancelledCount"), a.get("completionTime")) for a in answers] == [
        (1, None, None)
    ] * len(answers)
    assert all(_gone(r["pid"]) for r in _records(tmp_path).values())  # and the task was killed after


def test_update_job_changes_the_spec(clients: Clients) -> None:
    job = clients.create_job("upd", "pass")
    job.template.task_count = 4
    updated = clients.jobs.update_job(job=job).result(timeout=10, polling=FAST_POLL)
    assert updated.template.task_count == 4
    assert updated.generation == 2


def _raw(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_error_shapes_404_409_400(emu: Emulator, clients: Clients) -> None:
    with pytest.raises(exceptions.NotFound):
        clients.jobs.get_job(name=f"{clients.parent}/jobs/missing")
    status, body = _raw(f"{emu.url}/v2/{clients.parent}/jobs/missing")
    assert status == 404
    assert body["error"]["code"] == 404
    assert body["error"]["status"] == "NOT_FOUND"
    assert "missing" in body["error"]["message"]

    clients.create_job("dup", "pass")
    # google-api-core maps an HTTP 409 to Conflict, whatever the status text; the body says ALREADY_EXISTS.
    with pytest.raises(exceptions.Conflict, match="already exists"):
        clients.create_job("dup", "pass")
    status, body = _raw(
        f"{emu.url}/v2/{clients.parent}/jobs?jobId=dup",
        "POST",
        json.dumps({"template": {"template": {"containers": [{"image": "i"}]}}}).encode(),
    )
    assert (status, body["error"]["status"], body["error"]["code"]) == (409, "ALREADY_EXISTS", 409)

    with pytest.raises(exceptions.BadRequest) as bad:
        clients.create_job("Not_A_Name", "pass")
    (detail,) = bad.value.details  # over REST, api-core hands the details over as JSON
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["field"] == "job_id"
    status, body = _raw(
        f"{emu.url}/v2/{clients.parent}/jobs/dup:run",
        "POST",
        json.dumps(
            {"overrides": {"containerOverrides": [{"env": [{"name": "CLOUD_RUN_TASK_INDEX", "value": "1"}]}]}}
        ).encode(),
    )
    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    (detail,) = body["error"]["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["field"] == "overrides.container_overrides[0].env[0].name"

    status, body = _raw(f"{emu.url}/v2/{clients.parent}/jobs?jobId=x", "POST", b"{not json")
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, body = _raw(f"{emu.url}/v2/{clients.parent}/jobs?jobId=x", "POST", b'{"unknownField": 1}')
    assert status == 400
    assert "unknownField" in body["error"]["message"]
    assert emu.stats()["Jobs.CreateJob"] == 6


def test_image_without_command_needs_explicit_local_config(tmp_path: Path) -> None:
    local = {"example.com/tool:1": [PY, "-c", "import sys; sys.exit(0 if sys.argv[1:] == ['a'] else 4)"]}
    with Emulator(local_images=local) as emulator:
        clients = Clients(emulator)
        for job_id, image in (("mapped", "example.com/tool:1"), ("unknown", "example.com/other:1")):
            job = run_v2.Job(
                template=run_v2.ExecutionTemplate(
                    template=run_v2.TaskTemplate(containers=[run_v2.Container(image=image, args=["a"])], max_retries=3)
                )
            )
            clients.jobs.create_job(parent=clients.parent, job=job, job_id=job_id).result()
        assert clients.run("mapped").result(timeout=20, polling=FAST_POLL).succeeded_count == 1
        with pytest.raises(exceptions.FailedPrecondition, match="no local entrypoint"):
            clients.run("unknown").result(timeout=20, polling=FAST_POLL)
        assert emulator.task_stats()["attempts_started"] == 1  # the unknown image never ran, nor retried


def test_catalog_jobs_exist_at_start_with_secrets_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
    out = tmp_path / "env.json"
    code = f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"
    definition = JobDefinition(
        name="cataloged",
        description="a job from the catalog",
        image="local/cataloged:dev",
        command=[PY, "-c", code],
        env={"MODE": "test"},
        secret_env={"TOKEN": SecretRef(secret="api-token")},
        timeout="30s",
        max_retries=0,
        task_count=2,
        parallelism=1,
    )
    catalog = Catalog({"cataloged": definition})
    with catalog_emulator(catalog, secrets={"api-token": "s3cret"}) as emulator:
        clients = Clients(emulator)
        job = clients.jobs.get_job(name=f"{clients.parent}/jobs/cataloged")
        assert (job.template.task_count, job.template.parallelism) == (2, 1)
        env = {e.name: e for e in job.template.template.containers[0].env}
        assert env["TOKEN"].value_source.secret_key_ref.secret == "api-token"
        assert job.template.template.timeout.total_seconds() == 30
        assert clients.run("cataloged").result(timeout=20, polling=FAST_POLL).succeeded_count == 2
        seen = json.loads(out.read_text())
        assert (seen["TOKEN"], seen["MODE"]) == ("s3cret", "test")
        # Tasks reach fake-gcs-server through the emulator's own STORAGE_EMULATOR_HOST.
        assert seen["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:4443"

    with catalog_emulator(catalog) as emulator:
        clients = Clients(emulator)
        with pytest.raises(exceptions.FailedPrecondition, match=r"Secret 'api-token'.*has no local value"):
            clients.run("cataloged").result(timeout=20, polling=FAST_POLL)


def test_wait_operation_returns_when_done(clients: Clients) -> None:
    clients.create_job("waited", "import time; time.sleep(0.3)")
    run = clients.run("waited")
    from google.longrunning import operations_pb2

    done = clients.jobs.wait_operation(operations_pb2.WaitOperationRequest(name=run.operation.name))
    assert done.done
    execution = run_v2.Execution.deserialize(done.response.value)
    assert execution.succeeded_count == 1


def test_docker_fallback_reports_an_unreachable_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with Emulator(use_docker=True) as emulator:
        clients = Clients(emulator)
        job = run_v2.Job(
            template=run_v2.ExecutionTemplate(
                template=run_v2.TaskTemplate(containers=[run_v2.Container(image="example.com/only-in-a-registry:1")])
            )
        )
        clients.jobs.create_job(parent=clients.parent, job=job, job_id="dockerless").result(polling=FAST_POLL)
        with pytest.raises(exceptions.FailedPrecondition, match="with a reachable engine"):
            clients.run("dockerless").result(timeout=20, polling=FAST_POLL)
