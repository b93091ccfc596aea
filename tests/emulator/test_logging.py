"""Task output as Cloud Logging entries, read with the official google-cloud-logging client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import logging as gcl
from hypothesis import given
from hypothesis import strategies as st

from cloudrun_emulator import Emulator
from cloudrun_emulator.errors import ApiError
from cloudrun_emulator.faults import Faults, MethodFaults
from cloudrun_emulator.logfilter import Record, compile_filter
from cloudrun_emulator.logstore import LogStore
from controller.logs import PAGE_RETRIES, TailStats, TailTarget, fetch_tails
from controller.quota import Unlimited
from tests.emulator.conftest import FAST_POLL, Clients

EXEC_LABEL = 'labels."run.googleapis.com/execution_name"'
# Task 1 fails its first attempt, so its lines exist for attempts 0 and 1.
PRINTER = """
import json, os, sys
index, attempt = os.environ["CLOUD_RUN_TASK_INDEX"], os.environ["CLOUD_RUN_TASK_ATTEMPT"]
for n in range(4):
    print(f"task {index} attempt {attempt} line {n}", flush=True)
print(f"task {index} warning", file=sys.stderr, flush=True)
print(json.dumps({"severity": "ERROR", "message": f"task {index} structured"}), flush=True)
sys.exit(7 if (index, attempt) == ("1", "0") else 0)
"""


@pytest.fixture
def logging_client(emu: Emulator) -> gcl.Client:
    return gcl.Client(
        project=emu.project,
        credentials=AnonymousCredentials(),
        _use_grpc=False,
        client_options={"api_endpoint": emu.url},
    )


def _run_printer(clients: Clients, job_id: str = "printer", task_count: int = 2) -> str:
    if job_id not in {j.name.rsplit("/", 1)[-1] for j in clients.jobs.list_jobs(parent=clients.parent)}:
        clients.create_job(job_id, PRINTER, task_count=task_count, max_retries=1)
    execution = clients.run(job_id).result(timeout=20, polling=FAST_POLL)
    return str(execution.name.rsplit("/", 1)[-1])


def test_client_lists_one_task_attempt_in_order(emu: Emulator, clients: Clients, logging_client: gcl.Client) -> None:
    execution = _run_printer(clients)
    flt = (
        f'resource.type="cloud_run_job" AND resource.labels.job_name="printer" '
        f'AND {EXEC_LABEL}="{execution}" '
        f'AND labels."run.googleapis.com/task_index"="1" AND labels."run.googleapis.com/task_attempt"="1" '
        f'AND log_id("run.googleapis.com/stdout")'
    )
    entries = list(logging_client.list_entries(filter_=flt, order_by=gcl.ASCENDING, page_size=3))
    assert [e.payload for e in entries[:4]] == [f"task 1 attempt 1 line {n}" for n in range(4)]
    assert entries[4].payload == {"message": "task 1 structured"}
    assert entries[4].severity == "ERROR"
    assert len(entries) == 5
    first = entries[0]
    assert first.log_name == f"projects/{emu.project}/logs/run.googleapis.com%2Fstdout"
    assert first.resource.type == "cloud_run_job"
    assert first.resource.labels == {"job_name": "printer", "location": emu.region, "project_id": emu.project}
    assert first.labels["run.googleapis.com/execution_name"] == execution
    assert first.insert_id
    timestamps = [e.timestamp for e in entries]
    assert timestamps == sorted(timestamps)
    assert emu.stats()["Logging.ListLogEntries"] == 2  # page_size 3: two pages

    newest_first = list(logging_client.list_entries(filter_=flt, order_by=gcl.DESCENDING))
    assert [e.insert_id for e in newest_first] == [e.insert_id for e in reversed(entries)]


def test_stderr_severity_and_system_lines(clients: Clients, logging_client: gcl.Client) -> None:
    execution = _run_printer(clients)
    stderr = list(
        logging_client.list_entries(
            filter_=f'{EXEC_LABEL}="{execution}" logName:"stderr" labels."run.googleapis.com/task_index"="0"'
        )
    )
    assert [(e.payload, e.severity) for e in stderr] == [("task 0 warning", None)]
    errors = list(logging_client.list_entries(filter_=f'{EXEC_LABEL}="{execution}" AND severity>=ERROR'))
    assert sorted(e.payload["message"] for e in errors) == [
        "task 0 structured",
        "task 1 structured",
        "task 1 structured",
    ]
    system = list(
        logging_client.list_entries(filter_=f'{EXEC_LABEL}="{execution}" log_id("run.googleapis.com/varlog/system")')
    )
    assert [e.payload for e in system] == ["Container called exit(7)."]


def test_one_filter_for_many_executions_with_paging(
    emu: Emulator, clients: Clients, logging_client: gcl.Client
) -> None:
    executions = [_run_printer(clients, task_count=1) for _ in range(3)]
    names = [f"other-{i}" for i in range(400)] + executions
    values = " OR ".join(f'"{n}"' for n in names)
    flt = f'{EXEC_LABEL}=({values}) AND textPayload:"line 3"'
    emu.reset_stats()
    entries = list(logging_client.list_entries(filter_=flt, order_by=gcl.DESCENDING, page_size=2))
    assert [e.labels["run.googleapis.com/execution_name"] for e in entries] == executions[::-1]
    assert emu.stats() == {"Logging.ListLogEntries": 2}


def test_timestamp_range(clients: Clients, logging_client: gcl.Client) -> None:
    execution = _run_printer(clients, task_count=1)
    everything = list(logging_client.list_entries(filter_=f'{EXEC_LABEL}="{execution}"'))
    middle = everything[2].timestamp
    later = list(logging_client.list_entries(filter_=f'{EXEC_LABEL}="{execution}" timestamp>="{middle.isoformat()}"'))
    assert [e.insert_id for e in later] == [e.insert_id for e in everything if e.timestamp >= middle]
    assert 0 < len(later) < len(everything)
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert list(logging_client.list_entries(filter_=f"timestamp>{future}")) == []


def _post(emu: Emulator, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{emu.url}/v2/entries:list",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_bad_filter_and_page_size_are_400(emu: Emulator) -> None:
    status, body = _post(emu, {"resourceNames": ["projects/p"], "filter": 'labels."unterminated=1'})
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, body = _post(emu, {"resourceNames": ["projects/p"], "pageSize": 1001})
    assert status == 400
    assert body["error"]["details"][0]["fieldViolations"][0]["field"] == "page_size"
    assert _post(emu, {"resourceNames": ["projects/p"]}) == (200, {})


# ------------------------------------------------------------------ filter language, directly


def _record(seq: int = 1, *, severity: str | None = None, text: str = "hello world", **labels: str) -> Record:
    entry: dict = {
        "logName": "projects/p/logs/run.googleapis.com%2Fstdout",
        "resource": {"type": "cloud_run_job", "labels": {"job_name": "j"}},
        "labels": {"run.googleapis.com/execution_name": "e1", "run.googleapis.com/task_index": "3", **labels},
        "textPayload": text,
    }
    if severity:
        entry["severity"] = severity
    return Record(seq, 1_700_000_000_000_000, 1_700_000_000_000_000, "e1", entry)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ('resource.type="cloud_run_job"', True),
        ('resource.type!="cloud_run_job"', False),
        ('resource.type="cloud_run_job" resource.labels.job_name="x"', False),
        ('resource.type="cloud_run_job" OR resource.labels.job_name="x"', True),
        ('NOT resource.labels.job_name="x"', True),
        ('-resource.labels.job_name="j"', False),
        ('(resource.labels.job_name="x" OR labels."run.googleapis.com/task_index"="3") AND textPayload:WORLD', True),
        ('labels."run.googleapis.com/task_index">2', True),
        ('labels."run.googleapis.com/task_index"<"3"', False),
        ('textPayload=~"^hel+o"', True),
        ('textPayload!~"^hel+o"', False),
        ("labels.missing:*", False),
        ("NOT labels.missing:*", True),
        ("severity=DEFAULT", True),
        ("severity>=INFO", False),
        ('timestamp>="2023-11-14T22:13:19Z" AND timestamp<"2023-11-14T22:13:21+00:00"', True),
        ("timestamp<2023-11-14T22:13:19Z", False),
        ("hello", True),
        ('"not there"', False),
        ('labels."run.googleapis.com/task_index"=("1" OR "3")', True),
        ('labels."run.googleapis.com/task_index"!=("1" OR "3")', False),
        ('textPayload:("hello" AND "world")', True),
        ('textPayload:("hello" AND "mars")', False),
        ('log_id("run.googleapis.com/stdout")', True),
        ("", True),
    ],
)
def test_filter_language(flt: str, expected: bool) -> None:
    assert compile_filter(flt).predicate(_record()) is expected


def test_severity_compares_by_level() -> None:
    warning = _record(severity="WARNING")
    assert compile_filter("severity>=WARNING").predicate(warning)
    assert compile_filter("severity>INFO").predicate(warning)
    assert not compile_filter("severity>=ERROR").predicate(warning)


@pytest.mark.parametrize("flt", ['a="b', "a=(", "(a=b", "a=b)", 'timestamp>="yesterday"', "severity>LOUD", 'x=~"("'])
def test_invalid_filters_are_api_errors(flt: str) -> None:
    with pytest.raises(ApiError) as error:
        compile_filter(flt)
    assert error.value.http_code == 400


def test_execution_names_are_extracted_for_the_index() -> None:
    assert compile_filter(f'{EXEC_LABEL}=("a" OR "b") severity>=INFO').execution_names == {"a", "b"}
    assert compile_filter(f'{EXEC_LABEL}="a" OR {EXEC_LABEL}="c"').execution_names == {"a", "c"}
    assert compile_filter(f'{EXEC_LABEL}="a" OR severity>=INFO').execution_names is None
    assert compile_filter(f'NOT {EXEC_LABEL}="a"').execution_names is None


@given(
    st.lists(st.sampled_from(["0", "1", "2", "3", "4", "5"]), min_size=1, max_size=6), st.sampled_from(["0", "3", "9"])
)
def test_value_list_is_any_of_its_values(values: list[str], index: str) -> None:
    record = _record(**{"run.googleapis.com/task_index": index})
    listed = " OR ".join(f'"{v}"' for v in values)
    assert compile_filter(f'labels."run.googleapis.com/task_index"=({listed})').predicate(record) == (index in values)


def test_store_drops_oldest_beyond_its_cap() -> None:
    store = LogStore(max_entries=5)
    for n in range(8):
        store.write(
            project="p",
            region="r",
            job="j",
            execution=f"e{n % 2}",
            task_index=0,
            attempt=0,
            instance_id="i",
            stream="stdout",
            line=f"line {n}",
        )
    entries, token = store.list(compile_filter(""), projects={"p"}, descending=False, page_size=50, page_token="")
    assert [e["textPayload"] for e in entries] == [f"line {n}" for n in range(3, 8)]
    assert token == ""
    only_e1, _ = store.list(
        compile_filter(f'{EXEC_LABEL}="e1"'), projects={"p"}, descending=False, page_size=50, page_token=""
    )
    assert [e["textPayload"] for e in only_e1] == ["line 3", "line 5", "line 7"]
    other_project, _ = store.list(compile_filter(""), projects={"q"}, descending=False, page_size=50, page_token="")
    assert other_project == []


# With this seed the first entries.list of the fault stream loses its connection and a later one is answered.
DROP_SEED = 1


def test_log_tails_ask_again_for_a_page_whose_answer_was_lost(
    emu: Emulator, clients: Clients, logging_client: gcl.Client
) -> None:
    """A connection reset (as when a pooled connection meets the server's keep-alive timeout) or a 503 on a
    page costs a retry of that page, not the tails; a page that never comes leaves them incomplete."""
    execution = _run_printer(clients, task_count=1)
    targets = [TailTarget(key="item", execution=execution, task_index=None)]

    def tails() -> tuple[list[str], TailStats]:
        found, stats = fetch_tails(logging_client, emu.project, targets, limiter=Unlimited(), sleep=lambda _: None)
        return found["item"].fields().get("log_tail") or [], stats

    expected, clean = tails()
    assert clean.calls == 1 and not clean.incomplete and "task 0 attempt 0 line 3" in expected

    lossy = MethodFaults(drop_rate=0.5, drop_mode="close", error_rates={503: 0.2})
    emu.set_faults(Faults(seed=DROP_SEED, methods={"Logging.ListLogEntries": lossy}))
    emu.reset_stats()
    got, stats = tails()
    assert got == expected
    assert not stats.incomplete
    assert stats.calls == emu.stats()["Logging.ListLogEntries"] > 1  # at least one page asked for again

    emu.set_faults(Faults(methods={"Logging.ListLogEntries": MethodFaults(error_rates={503: 1.0})}))
    got, stats = tails()
    assert got == [] and stats.incomplete and stats.calls == 1 + PAGE_RETRIES
