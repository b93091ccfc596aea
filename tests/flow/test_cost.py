"""A real batch's cost figures match its task spans and its jobs' limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from controller.pricing import USD_PER_GIB_SECOND, USD_PER_VCPU_SECOND, billed_seconds
from controller.report import ItemState, Report


def test_items_and_the_batch_carry_what_their_task_spans_were_billed_for(
    run_flow: Callable[..., tuple[dict[str, Any], Report]],
) -> None:
    spec = {
        "batch_id": "it-cost",
        "items": [
            # hello: 1 vCPU, 512Mi, packed together.
            {"key": "a", "job": "hello", "args": ["--sleep", "0.3", "a"]},
            {"key": "b", "job": "hello", "args": ["--sleep", "0.2", "b"]},
            # a one-off run with its own limits and two tasks.
            {"key": "c", "image": "busybox:1.36", "command": ["sleep", "0.2"], "cpu": "2", "memory": "1Gi",
             "task_count": 2},
        ],
    }  # fmt: skip
    _summary, report = run_flow(spec)

    limits = {"a": (1.0, 0.5), "b": (1.0, 0.5), "c": (2.0, 1.0)}
    assert [item.state for item in report.items] == [ItemState.SUCCEEDED] * 3
    for item in report.items:
        spans = [(t.end_time - t.start_time).total_seconds() for t in item.tasks if t.start_time and t.end_time]
        assert len(spans) == len(item.tasks) == (2 if item.key == "c" else 1)
        billed = sum(billed_seconds(span) for span in spans)
        assert billed > 0
        cpu, gib = limits[item.key]
        assert item.vcpu_seconds == pytest.approx(billed * cpu, abs=0.001), item.key
        assert item.gib_seconds == pytest.approx(billed * gib, abs=0.001), item.key
        expected_usd = billed * (cpu * USD_PER_VCPU_SECOND + gib * USD_PER_GIB_SECOND)
        assert item.cost_usd == pytest.approx(expected_usd, abs=1e-8), item.key
    cost = report.summary.cost
    assert cost is not None
    assert cost.vcpu_seconds == pytest.approx(sum(item.vcpu_seconds or 0 for item in report.items), abs=0.002)
    assert cost.gib_seconds == pytest.approx(sum(item.gib_seconds or 0 for item in report.items), abs=0.002)
    assert cost.cost_usd == pytest.approx(sum(item.cost_usd or 0 for item in report.items), abs=1e-8)
