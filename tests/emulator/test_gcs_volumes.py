"""Cloud Storage volumes (``Volume.gcs``): a job made through google-cloud-run mounts a bucket, or one folder
of it (``only-dir=``); its tasks read the objects as files and what they write becomes objects, in
fake-gcs-server or in a local folder the emulator maps the bucket to."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from testenv import BUCKET

from cloudrun_emulator import Emulator
from tests.emulator.conftest import FAST_POLL, PY, Clients

MOUNT = "/mnt/data"
# Reads in.txt if it is there, writes out-<task index>.json: the task sees the mount path as a folder.
TASK = """
import json, os, pathlib
root = pathlib.Path(os.environ["DATA"])
seen = (root / "in.txt").read_text() if (root / "in.txt").exists() else None
(root / "sub").mkdir(exist_ok=True)
(root / "sub" / f"out-{os.environ['CLOUD_RUN_TASK_INDEX']}.json").write_text(json.dumps({"seen": seen}))
"""


# Writes the names of the files it sees, to seen.json.
LIST = """
import json, os, pathlib
root = pathlib.Path(os.environ["DATA"])
seen = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
(root / "seen.json").write_text(json.dumps(seen))
"""


def _create(
    clients: Clients,
    job_id: str,
    gcs: run_v2.GCSVolumeSource,
    *,
    task_count: int = 1,
    mount: str = MOUNT,
    code: str = TASK,
) -> None:
    container = run_v2.Container(
        image="example.com/writer:1",
        command=[PY, "-c", code],
        env=[run_v2.EnvVar(name="DATA", value=MOUNT)],
        volume_mounts=[run_v2.VolumeMount(name="data", mount_path=mount)],
    )
    template = run_v2.TaskTemplate(
        containers=[container], volumes=[run_v2.Volume(name="data", gcs=gcs)], max_retries=0, timeout="30s"
    )
    job = run_v2.Job(template=run_v2.ExecutionTemplate(template=template, task_count=task_count))
    clients.jobs.create_job(parent=clients.parent, job=job, job_id=job_id).result(timeout=10, polling=FAST_POLL)


def _run(clients: Clients, job_id: str) -> run_v2.Execution:
    execution = clients.run(job_id).metadata
    return clients.finished(execution.name, timeout=30)


def _folder() -> str:
    return f"volume-tests/{uuid.uuid4().hex[:12]}"


def test_a_task_reads_objects_and_its_files_become_objects_under_only_dir(clients: Clients, gcs: Any) -> None:
    folder = _folder()
    bucket = gcs.bucket(BUCKET)
    bucket.blob(f"{folder}/in.txt").upload_from_string("hello")
    bucket.blob("outside.txt").upload_from_string("not mounted")
    _create(
        clients, "writer", run_v2.GCSVolumeSource(bucket=BUCKET, mount_options=[f"only-dir={folder}"]), task_count=2
    )

    execution = _run(clients, "writer")

    assert execution.succeeded_count == 2, execution
    names = sorted(blob.name for blob in gcs.list_blobs(BUCKET, prefix=f"{folder}/"))
    assert names == [f"{folder}/in.txt", f"{folder}/sub/out-0.json", f"{folder}/sub/out-1.json"]
    assert bucket.blob(f"{folder}/sub/out-1.json").download_as_bytes() == b'{"seen": "hello"}'


@pytest.mark.parametrize(("options", "seen"), [([], ["top.txt"]), (["implicit-dirs"], ["deep/er/a.txt", "top.txt"])])
def test_objects_in_folders_show_only_with_implicit_dirs(
    clients: Clients, gcs: Any, options: list[str], seen: list[str]
) -> None:
    """Cloud Storage FUSE shows a folder that has no placeholder object only with implicit-dirs."""
    folder = _folder()
    bucket = gcs.bucket(BUCKET)
    bucket.blob(f"{folder}/top.txt").upload_from_string("1")
    bucket.blob(f"{folder}/deep/er/a.txt").upload_from_string("2")
    gcs_source = run_v2.GCSVolumeSource(bucket=BUCKET, mount_options=[f"only-dir={folder}", *options])
    _create(clients, "lister", gcs_source, code=LIST)

    _run(clients, "lister")

    assert json.loads(bucket.blob(f"{folder}/seen.json").download_as_bytes()) == seen


# Deletes in.txt, and writes out.txt with what it read, where the task's index says.
REPLACE = """
import os, pathlib
root = pathlib.Path(os.environ["DATA"])
seen = (root / "in.txt").read_text()
(root / "in.txt").unlink()
(root / f"out-{os.environ['CLOUD_RUN_TASK_INDEX']}.txt").write_text(seen)
"""


def test_each_attempt_sees_the_bucket_as_it_is_when_it_starts(clients: Clients, gcs: Any) -> None:
    """Objects written or deleted through the API between two executions are what the second one sees, and a
    file a task deletes is an object deleted: the mount is no snapshot taken once."""
    folder = _folder()
    bucket = gcs.bucket(BUCKET)
    bucket.blob(f"{folder}/in.txt").upload_from_string("first")
    _create(
        clients, "replacer", run_v2.GCSVolumeSource(bucket=BUCKET, mount_options=[f"only-dir={folder}"]), code=REPLACE
    )

    assert _run(clients, "replacer").succeeded_count == 1
    assert bucket.blob(f"{folder}/in.txt").exists() is False
    bucket.blob(f"{folder}/in.txt").upload_from_string("second")
    bucket.blob(f"{folder}/out-0.txt").delete()
    bucket.blob(f"{folder}/later.txt").upload_from_string("new")
    _create(clients, "after", run_v2.GCSVolumeSource(bucket=BUCKET, mount_options=[f"only-dir={folder}"]), code=LIST)
    assert _run(clients, "after").succeeded_count == 1
    assert json.loads(bucket.blob(f"{folder}/seen.json").download_as_bytes()) == ["in.txt", "later.txt"]
    assert _run(clients, "replacer").succeeded_count == 1

    assert bucket.blob(f"{folder}/out-0.txt").download_as_bytes() == b"second"
    assert bucket.blob(f"{folder}/in.txt").exists() is False


def test_a_folder_is_fetched_once_for_all_the_attempts_that_mount_it(emu: Emulator, gcs: Any) -> None:
    """Cloud Storage FUSE reads an object when a task opens it; the emulator fills a mount before the task
    starts. Copying the whole folder for every attempt made a batch whose tasks each add one result to one
    folder cost copies in the square of its size: each attempt now fetches only what changed."""
    clients = Clients(emu)
    folder, objects, tasks = _folder(), 30, 12
    bucket = gcs.bucket(BUCKET)
    for n in range(objects):
        bucket.blob(f"{folder}/obj-{n:02d}.txt").upload_from_string(f"object {n}")
    gcs_source = run_v2.GCSVolumeSource(bucket=BUCKET, mount_options=[f"only-dir={folder}"])
    _create(clients, "many", gcs_source, task_count=tasks)

    for _ in range(2):
        execution = _run(clients, "many")
        assert execution.succeeded_count == tasks, execution

    # Every object once, and each task's own out-<index>.json never (the first run wrote it from the mount).
    fetched = emu.task_stats()["volume_objects_fetched"]
    assert fetched == objects, f"{fetched} objects fetched for {objects} objects and {2 * tasks} attempts"
    names = {blob.name for blob in gcs.list_blobs(BUCKET, prefix=f"{folder}/sub/")}
    assert names == {f"{folder}/sub/out-{n}.json" for n in range(tasks)}


def test_a_read_only_volume_writes_nothing_back(clients: Clients, gcs: Any) -> None:
    folder = _folder()
    gcs.bucket(BUCKET).blob(f"{folder}/in.txt").upload_from_string("hello")
    gcs_source = run_v2.GCSVolumeSource(bucket=BUCKET, read_only=True, mount_options=[f"only-dir={folder}"])
    _create(clients, "reader", gcs_source)

    _run(clients, "reader")

    assert [blob.name for blob in gcs.list_blobs(BUCKET, prefix=f"{folder}/")] == [f"{folder}/in.txt"]


def test_a_bucket_that_does_not_exist_fails_the_task_before_it_starts(clients: Clients, gcs: Any) -> None:
    _create(clients, "nobucket", run_v2.GCSVolumeSource(bucket="no-such-bucket"))

    execution = _run(clients, "nobucket")

    task = clients.tasks_of(execution.name)[0]
    assert execution.failed_count == 1
    assert "no-such-bucket" in task.last_attempt_result.status.message, task


def test_a_bucket_mapped_to_a_local_folder_is_that_folder(tmp_path: Path) -> None:
    with Emulator(kill_grace_seconds=0.2, local_buckets={"local-bucket": str(tmp_path)}) as emu:
        clients = Clients(emu)
        (tmp_path / "a" / "b").mkdir(parents=True)
        (tmp_path / "a" / "b" / "in.txt").write_text("local")
        _create(clients, "local", run_v2.GCSVolumeSource(bucket="local-bucket", mount_options=["only-dir=a/b"]))

        execution = _run(clients, "local")

    assert execution.succeeded_count == 1
    assert (tmp_path / "a" / "b" / "sub" / "out-0.json").read_text() == '{"seen": "local"}'


@pytest.mark.parametrize(
    ("mount", "volume", "field"),
    [("/mnt/x", "other", "volume_mounts[0].name"), ("/proc/x", "data", "volume_mounts[0].mount_path")],
)
def test_mounts_are_checked(clients: Clients, mount: str, volume: str, field: str) -> None:
    container = run_v2.Container(
        image="example.com/writer:1",
        command=[PY, "-c", "pass"],
        volume_mounts=[run_v2.VolumeMount(name=volume, mount_path=mount)],
    )
    gcs = run_v2.GCSVolumeSource(bucket=BUCKET)
    template = run_v2.TaskTemplate(containers=[container], volumes=[run_v2.Volume(name="data", gcs=gcs)])
    job = run_v2.Job(template=run_v2.ExecutionTemplate(template=template))

    with pytest.raises(exceptions.BadRequest) as caught:
        clients.jobs.create_job(parent=clients.parent, job=job, job_id="bad-mount")

    assert field in str(caught.value)
