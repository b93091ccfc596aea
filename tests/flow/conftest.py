"""Helpers for running whole batches through the flow against the emulators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from testenv import BUCKET, FLOW_PARAMS

from cloudrun_emulator import Emulator
from controller.batchfolder import open_report
from controller.report import Report


@pytest.fixture
def run_flow(
    emulator: Emulator, gcs: Any, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[dict[str, Any], Report]]:
    """Run ``fan_out`` (a real Prefect flow run) on a spec dict; returns its summary and the report read
    back from the bucket through google-cloud-storage."""
    from controller.flow import fan_out

    monkeypatch.setenv("FANOUT_EMULATOR_HOST", emulator.url)

    def run(spec: dict[str, Any], **params: Any) -> tuple[dict[str, Any], Report]:
        params.setdefault("report_to", f"gs://{BUCKET}/flow-tests")
        params.setdefault("poll_interval", 0.3)
        # The summary back even when items failed; tests/flow/test_prefect_states.py covers the Failed state.
        params.setdefault("fail_on_item_failure", False)
        summary = fan_out(batch=spec, **{**FLOW_PARAMS, **params})
        report = open_report(summary["report"], gcs).report
        return summary, report

    return run
