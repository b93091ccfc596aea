"""Tasks whose container never ran (a command that does not exist, a Secret Manager value that is missing)
are reported failed with Cloud Run's reason and no exit code, never as "exited with code 0"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.batch import PollPolicy
from controller.catalog import Catalog
from controller.clients import Clients
from controller.flow import Options, execute
from controller.quota import Rates
from controller.report import ItemState
from controller.spec import load_batch
from controller.store import open_store
from tests.reliability.harness import PROJECT, REGION


def test_tasks_that_never_started_say_why(catalog: Catalog, clients: Clients, tmp_path: Path, figures: Any) -> None:
    image = "example.com/never:1"
    spec = {
        "batch_id": "never-started",
        "items": [
            {"key": "no-command", "image": image, "command": ["no-such-command-xyz"]},
            {
                "key": "no-secret",
                "image": image,
                "command": ["sh", "-c", "echo started"],
                "env": {"TOKEN": {"secret": f"projects/{PROJECT}/secrets/never-created"}},
            },
            {"key": "runs", "image": image, "command": ["sh", "-c", "exit 0"]},
        ],
    }
    options = Options(
        project=PROJECT,
        region=REGION,
        report_to=str(tmp_path),
        rates=Rates.unlimited(),
        poll=PollPolicy(fastest=0.25, slowest=1.0),
        logs_for="none",
    )
    report, _ = execute(
        load_batch(spec, catalog),
        catalog,
        options,
        clients=clients,
        store=open_store(str(tmp_path)),
        use_prefect_tasks=False,
    )
    items = {item.key: item for item in report.items}
    assert items["runs"].state is ItemState.SUCCEEDED and items["runs"].exit_code == 0
    for key, names in (("no-command", "no-such-command-xyz"), ("no-secret", "never-created")):
        item = items[key]
        assert item.state is ItemState.FAILED, (key, item.state)
        assert item.exit_code is None, (key, item.exit_code)
        assert item.reason and names in item.reason and "exited with code" not in item.reason, (key, item.reason)
    figures("tasks that never started", "; ".join(f"{k}: {items[k].reason}" for k in ("no-command", "no-secret")))
