"""Cost figures worked by hand: billed spans, vCPU-seconds, GiB-seconds and the estimated price."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import pricing
from controller.catalog import Catalog
from controller.plan import plan
from controller.pricing import billed_seconds, gib, plan_upper_bound, quantity, tasks_usage, usage
from controller.report import ItemResult, ItemState, TaskResult, summarize
from controller.spec import load_batch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_price_table_is_tier_1_jobs_and_says_where_it_comes_from() -> None:
    assert pricing.USD_PER_VCPU_SECOND == 0.000018
    assert pricing.USD_PER_GIB_SECOND == 0.000002
    assert pricing.PRICE_SOURCE == "https://cloud.google.com/run/pricing"
    assert datetime.strptime(pricing.PRICE_DATE, "%Y-%m-%d")
    assert "no free tier" in pricing.ESTIMATE_NOTE


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1.0), ("2", 2.0), ("500m", 0.5), ("0.25", 0.25), ("512Mi", 536_870_912.0), ("1G", 1e9), ("2Ki", 2048.0)],
)
def test_quantities(text: str, value: float) -> None:
    assert quantity(text) == value


def test_memory_in_gib() -> None:
    assert gib("512Mi") == 0.5
    assert gib("2Gi") == 2.0
    assert gib("1G") == pytest.approx(0.931323, abs=1e-6)  # 10^9 / 2^30


def test_a_bad_quantity_names_itself() -> None:
    with pytest.raises(ValueError, match="'two'"):
        quantity("two")


@pytest.mark.parametrize(
    ("seconds", "billed"), [(0.0, 0.0), (0.01, 0.1), (1.0, 1.0), (1.04, 1.1), (10.03, 10.1), (-1.0, 0.0)]
)
def test_spans_are_billed_in_100_ms_steps_rounded_up(seconds: float, billed: float) -> None:
    assert billed_seconds(seconds) == pytest.approx(billed)


def test_one_span() -> None:
    # 10.03 s bills as 10.1 s: x 2 vCPU = 20.2 vCPU-s, x 1 GiB = 10.1 GiB-s;
    # 20.2 x 0.000018 = 0.0003636, 10.1 x 0.000002 = 0.0000202, together 0.0003838.
    use = usage(10.03, cpu="2", memory="1Gi")
    assert use.vcpu_seconds == pytest.approx(20.2)
    assert use.gib_seconds == pytest.approx(10.1)
    assert use.cost_usd == pytest.approx(0.0003838)


def _task(index: int, seconds: float | None) -> TaskResult:
    end = None if seconds is None else T0 + timedelta(seconds=seconds)
    return TaskResult(index=index, state=ItemState.SUCCEEDED, start_time=T0, end_time=end)


def test_an_items_tasks_add_up_and_a_task_without_an_end_costs_nothing_known() -> None:
    # 30 s + 45.05 s (bills 45.1 s) = 75.1 s at 1 vCPU and 0.5 GiB: 75.1 vCPU-s, 37.55 GiB-s;
    # 75.1 x 0.000018 = 0.0013518, 37.55 x 0.000002 = 0.0000751, together 0.0014269.
    use = tasks_usage([_task(0, 30.0), _task(1, 45.05), _task(2, None)], cpu="1", memory="512Mi")
    assert use is not None
    assert use.vcpu_seconds == pytest.approx(75.1)
    assert use.gib_seconds == pytest.approx(37.55)
    assert use.cost_usd == pytest.approx(0.0014269)
    assert tasks_usage([_task(0, None)], cpu="1", memory="512Mi") is None


def test_the_batch_total_is_the_sum_of_its_items() -> None:
    def item(index: int, vcpu: float | None, gib_s: float | None, usd: float | None) -> ItemResult:
        return ItemResult(
            key=f"k{index}", index=index, job="j", state=ItemState.SUCCEEDED,
            vcpu_seconds=vcpu, gib_seconds=gib_s, cost_usd=usd,
        )  # fmt: skip

    summary = summarize([item(0, 20.2, 10.1, 0.0003838), item(1, None, None, None), item(2, 75.1, 37.55, 0.0014269)],
                        launches=3, duration_seconds=None)  # fmt: skip
    assert summary.cost is not None
    assert summary.cost.vcpu_seconds == 95.3
    assert summary.cost.gib_seconds == 47.65
    assert summary.cost.cost_usd == 0.0018107


@pytest.mark.parametrize(
    ("amount", "text"), [(0.0, "0"), (0.000024, "0.000024"), (0.0018107, "0.001811"), (1234.567, "1,234.57")]
)
def test_dollars_for_people(amount: float, text: str) -> None:
    assert pricing.format_usd(amount) == text


def test_the_plans_upper_bound_is_tasks_times_attempts_times_timeout_times_resources() -> None:
    catalog = Catalog.from_jobs_dir()  # hello: 1 vCPU, 512Mi, max_retries 1
    batch = load_batch(
        {
            "batch_id": "cost",
            "items": [
                {"job": "hello", "timeout": "10s"},
                {"job": "hello", "timeout": "10s"},
                {"image": "busybox", "command": ["true"], "cpu": "2", "memory": "1Gi", "retries": 1},
            ],
        },
        catalog,
    )
    the_plan = plan(batch, catalog)
    assert [(launch.cpu, launch.memory) for launch in the_plan.launches] == [("1", "512Mi"), ("2", "1Gi")]
    # hello, packed: 2 tasks x 2 attempts x 10 s = 40 s -> 40 vCPU-s, 20 GiB-s.
    # one-off: 1 task x 2 attempts x 600 s (Cloud Run's default timeout) = 1,200 s -> 2,400 vCPU-s, 1,200 GiB-s.
    # 2,440 x 0.000018 = 0.04392, 1,220 x 0.000002 = 0.00244, together 0.04636.
    bound = plan_upper_bound(the_plan, catalog)
    assert bound.vcpu_seconds == pytest.approx(2440.0)
    assert bound.gib_seconds == pytest.approx(1220.0)
    assert bound.cost_usd == pytest.approx(0.04636)


def test_fanout_plan_prints_the_upper_bound(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    spec = tmp_path / "two.yaml"
    spec.write_text("items:\n  - job: hello\n    timeout: 10s\n  - job: hello\n    timeout: 10s\n")
    assert main(["plan", str(spec), "--mode", "packed"]) == 0
    # 2 tasks x 2 attempts x 10 s at 1 vCPU and 0.5 GiB: 40 vCPU-s, 20 GiB-s, 40 x 0.000018 + 20 x 0.000002.
    out = capsys.readouterr().out
    assert "at most 40.0 vCPU-s, 20.0 GiB-s, ~$0.00076 if every task ran every attempt to its timeout" in out
    assert "no free tier" in out
    assert main(["plan", str(spec), "--mode", "packed", "--json"]) == 0
    bound = json.loads(capsys.readouterr().out)["upper_bound"]
    assert bound == {"vcpu_seconds": 40.0, "gib_seconds": 20.0, "cost_usd": 0.00076}
