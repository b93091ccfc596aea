"""The controller's response field masks: a masked poll maps to exactly the statuses an unmasked one does, so
the controller reads no field its masks drop, and the masks do drop what it does not read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.cloud import run_v2

from cloudrun_emulator import Emulator
from controller.clients import Clients as ControllerClients
from controller.clients import Endpoints
from controller.cloudrun import LOOKUP_FIELDS, CloudRun
from controller.plan import ENV_LAUNCH_KEY
from controller.quota import Budget, Rates
from tests.emulator.conftest import Clients

# Task 0 succeeds, task 1 exits 3 on both attempts, task 2 is stopped at its timeout, task 3 writes stderr.
CODE = """
import os, sys, time
index = int(os.environ["CLOUD_RUN_TASK_INDEX"])
if index == 1:
    sys.exit(3)
if index == 2:
    time.sleep(30)
print("done", file=sys.stderr)
"""


def _cloud(emu: Emulator, *, masks: bool) -> CloudRun:
    clients = ControllerClients(project=emu.project, endpoints=Endpoints(cloud_run=emu.url, logging=emu.url))
    return CloudRun(clients, emu.project, emu.region, Budget.from_rates(Rates.unlimited()), field_masks=masks)


def test_masked_and_unmasked_polls_agree(emu: Emulator, clients: Clients) -> None:
    clients.create_job("mixed", CODE, task_count=4, max_retries=1, timeout="2s", env={ENV_LAUNCH_KEY: "k1"})
    names = {str(clients.run("mixed").metadata.name) for _ in range(3)}
    for name in names:
        clients.finished(name, timeout=30)
    # One still running when polled, and unchanged while it is: its task sleeps longer than the test.
    clients.create_job("held", "import time; time.sleep(60)", timeout="120s")
    running = str(clients.run("held").metadata.name)
    clients.wait_for(running, lambda e: e.running_count == 1)
    since = datetime.now(UTC) - timedelta(minutes=1)
    masked, unmasked = _cloud(emu, masks=True), _cloud(emu, masks=False)
    every = {"mixed": names, "held": {running}}

    assert masked.poll(every, since=since) == unmasked.poll(every, since=since)
    assert list(masked.list_executions("mixed")) == list(unmasked.list_executions("mixed"))
    assert masked.find_launched("mixed", {"k1"}, since=since) == unmasked.find_launched("mixed", {"k1"}, since=since)
    for name in [*names, running]:
        assert masked.get_execution(name) == unmasked.get_execution(name)
        masked_tasks = masked.list_tasks(name)
        assert masked_tasks == unmasked.list_tasks(name)
    ended = masked.list_tasks(sorted(names)[0])
    assert {t.state.value if t.state else None for t in ended} == {"succeeded", "failed", "timed_out"}
    assert {t.exit_code for t in ended} >= {0, 3}


def test_masks_drop_what_the_controller_does_not_read(emu: Emulator, clients: Clients) -> None:
    clients.create_job("small", "pass", task_count=2)
    name = str(clients.run("small").metadata.name)
    clients.finished(name)
    cloud = _cloud(emu, masks=True)
    call = cloud._lister  # the request each list page is sent with, masks included
    page = call(run_v2.ListTasksRequest(parent=name, page_size=1))()
    task = page.tasks[0]
    assert page.next_page_token  # kept by the mask, so paging still works
    assert not task.log_uri and not task.containers and not task.job
    assert task.index == 0 and task.conditions


def test_a_look_up_for_launch_keys_reads_only_the_key_the_name_and_the_creation_time(
    emu: Emulator, clients: Clients
) -> None:
    clients.create_job("keyed", "pass", env={ENV_LAUNCH_KEY: "k9"})
    name = str(clients.run("keyed").metadata.name)
    clients.finished(name)
    cloud = _cloud(emu, masks=True)
    page = cloud._lister(run_v2.ListExecutionsRequest(parent=cloud.job_path("keyed")), LOOKUP_FIELDS)()
    [listed] = page.executions
    assert listed.name == name and listed.create_time and listed.template.containers[0].env[0].value == "k9"
    assert not listed.conditions and not listed.completion_time and not listed.succeeded_count
    # What the look-up returns is still the full status, read for the one execution it found.
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert cloud.find_launched("keyed", {"k9", "absent"}, since=since) == {"k9": cloud.get_execution(name)}
    assert cloud.find_launched("keyed", {"k9"}, since=since)["k9"].succeeded == 1
