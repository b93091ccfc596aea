"""Checks the flow tests make through the official clients."""

from __future__ import annotations

import json

from google.cloud import run_v2
from testenv import PROJECT, REGION

from cloudrun_emulator import Emulator
from controller.report import Report, item_json


def executions_with_key(emulator: Emulator, job: str, key: str) -> list[str]:
    """Names of the job's executions started with this launch key, through the official client."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    client = run_v2.ExecutionsClient(
        credentials=AnonymousCredentials(), transport="rest", client_options=ClientOptions(api_endpoint=emulator.url)
    )
    names = []
    for execution in client.list_executions(parent=f"projects/{PROJECT}/locations/{REGION}/jobs/{job}"):
        env = {e.name: e.value for c in execution.template.containers for e in c.env}
        if env.get("FANOUT_LAUNCH_KEY") == key:
            names.append(execution.name)
    return names


def dump(report: Report) -> str:
    document = json.loads(report.header_json())
    return json.dumps({**document, "items": [json.loads(item_json(item)) for item in report.items]}, indent=1)
