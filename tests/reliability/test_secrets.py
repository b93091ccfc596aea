"""The secret canary: a value marked secret (``env: {K: {value: CANARY}}``), printed by the tasks that get
it, one of which fails (so its log tail lands in the report), appears in no output: report.json,
report.html, Prefect artifacts, flow-run logs and parameters, task-run names, the controller's stdout and
stderr, its Python log records, the flow's exception, and the messages of ``fanout plan``/``fanout run``.

A Secret Manager reference's value never passes through the controller: it appears in no output either,
except in a log tail when the job itself prints it (the controller cannot know that value to redact it;
see docs/reliability.md).
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from testenv import FLOW_PARAMS, PROJECT, REGION, report_document

from controller.catalog import Catalog
from controller.emulator_jobs import catalog_emulator
from tests.reliability.harness import fanout

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),
]

CANARY = f"canary-{secrets.token_hex(8)}"
SM_CANARY = f"sm-canary-{secrets.token_hex(8)}"


def _spec(batch_id: str) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "items": [
            # Succeeds, greeting with the canary; its log tail is fetched with logs_for="all".
            {"key": "greets", "job": "hello", "env": {"GREETING": {"value": CANARY}}},
            # Fails after printing the canary and the Secret Manager value (which this item does not print).
            {
                "key": "prints-and-fails",
                "image": "example.com/sh:1",
                "command": ["sh", "-c", 'echo "token=$TOKEN"; echo "to stderr $TOKEN" >&2; exit 3'],
                "env": {"TOKEN": {"value": CANARY}, "API": {"secret": "canary-token"}},
            },
            # Times out while holding the canary.
            {
                "key": "times-out",
                "image": "example.com/sh:1",
                "command": ["sh", "-c", 'echo "waiting with $TOKEN"; sleep 30'],
                "env": {"TOKEN": {"value": CANARY}},
                "timeout": "2s",
            },
            # The Secret Manager reference whose value nothing prints.
            {
                "key": "uses-secret",
                "image": "example.com/sh:1",
                "command": ["sh", "-c", 'test -n "$API" && echo "got the api key"'],
                "env": {"API": {"secret": "canary-token"}},
            },
        ],
    }


def _find(haystacks: dict[str, str], needle: str) -> list[str]:
    return [where for where, text in haystacks.items() if needle in text]


def test_the_secret_canary_appears_nowhere(
    catalog: Catalog,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    figures: Any,
) -> None:
    from controller.flow import fan_out

    caplog.set_level(logging.DEBUG)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec("canary")))
    reports = tmp_path / "reports"
    outputs: dict[str, str] = {}
    with catalog_emulator(catalog, project=PROJECT, region=REGION, secrets={"canary-token": SM_CANARY}) as emu:
        monkeypatch.setenv("FANOUT_EMULATOR_HOST", emu.url)
        state = fan_out(
            batch=str(spec),
            **FLOW_PARAMS,
            report_to=str(reports),
            logs_for="all",
            fail_on_item_failure=True,
            poll_interval=0.5,
            return_state=True,
        )
        # The task really printed it, so the redaction is what keeps it out.
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import logging as gcl

        client = gcl.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            _use_grpc=False,
            client_options={"api_endpoint": emu.url},
        )
        emulator_logs = "\n".join(
            str(entry.payload) for entry in client.list_entries(resource_names=[f"projects/{PROJECT}"])
        )

    assert state.is_failed(), state
    error = state.result(raise_on_failure=False)
    flow_run_id = state.state_details.flow_run_id
    assert isinstance(error, RuntimeError)
    outputs["flow exception"] = f"{error!r} {error}"
    outputs["flow state message"] = state.message or ""
    report = report_document(reports / "canary")
    outputs["report.json"] = (reports / "canary" / "report.json").read_text()
    outputs["report items"] = "".join(path.read_text() for path in sorted((reports / "canary" / "items").iterdir()))
    outputs["report.html"] = (reports / "canary" / "report.html").read_text()
    outputs["batch.json"] = (reports / "canary" / "batch.json").read_text()

    from prefect.logging.handlers import APILogHandler

    for handler in logging.getLogger("prefect").handlers + logging.getLogger().handlers:
        if isinstance(handler, APILogHandler):
            handler.flush()
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(flow_run_id)
        outputs["flow run parameters"] = json.dumps(run.parameters, default=str)
        outputs["flow run state"] = json.dumps(run.state.model_dump(mode="json") if run.state else {}, default=str)
        artifacts = prefect.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        outputs["prefect artifacts"] = json.dumps([a.model_dump(mode="json") for a in artifacts], default=str)
        logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        outputs["prefect logs"] = "\n".join(log.message for log in logs)
        task_runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        outputs["prefect task runs"] = json.dumps([t.model_dump(mode="json") for t in task_runs], default=str)
    captured = capfd.readouterr()
    outputs["stdout"], outputs["stderr"] = captured.out, captured.err
    outputs["python log records"] = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.exc_info[1] if r.exc_info else ''}" for r in caplog.records
    )

    # The CLI: plan --json shows the overrides; an invalid spec holding the canary is refused.
    plan_proc = fanout(["plan", "--json", str(spec)])
    outputs["fanout plan --json"] = "".join(plan_proc.communicate(timeout=60))
    bad = tmp_path / "bad.json"
    bad_spec = _spec("canary-bad")
    bad_spec["items"][0]["env"]["GREETING"]["extra"] = CANARY
    bad_spec["items"][1]["env"]["TOKEN"] = {"value": CANARY, "secret": "x"}
    bad_spec["items"][2]["env"]["TOKEN"] = {"value": [CANARY]}
    # Other problems beside the secret, so the message has much to say (but nothing about the value).
    bad_spec["items"].append({"job": "hello", "env": {"PORT": {"value": CANARY}, "B": {"value": CANARY}}, "x": 1})
    bad.write_text(json.dumps(bad_spec))
    bad_proc = fanout(["run", str(bad), "--emulator", "http://127.0.0.1:9"])
    outputs["fanout run (invalid spec)"] = "".join(bad_proc.communicate(timeout=60))
    assert bad_proc.returncode == 2

    # The canary did reach the tasks and their logs, and the report has the tails, redacted.
    assert CANARY in emulator_logs and SM_CANARY not in emulator_logs
    tails = {item["key"]: item["log_tail"] for item in report["items"]}
    assert any("***" in line for line in tails["prints-and-fails"]), tails
    assert any("got the api key" in line for line in tails["uses-secret"]), tails
    assert "token=***" in outputs["report items"]

    leaks = _find(outputs, CANARY)
    sm_leaks = _find(outputs, SM_CANARY)
    figures("secret canary: outputs searched", f"{len(outputs)} ({', '.join(outputs)})")
    figures("secret canary: outputs containing it", f"{len(leaks)} {leaks}")
    figures("Secret Manager canary: outputs containing it", f"{len(sm_leaks)} {sm_leaks}")
    assert not leaks, {where: outputs[where][max(0, outputs[where].find(CANARY) - 200) :][:400] for where in leaks}
    assert not sm_leaks
