"""Retry policies, the stop rule and the attempts' bookkeeping, as pure data: what each failure decides, how
retries are grouped into launches, and how their options are read and refused."""

from __future__ import annotations

import pytest

from controller.attempts import Attempts
from controller.catalog import Catalog
from controller.options import OptionError, RunOptions
from controller.plan import Mode, plan
from controller.policy import RetryPolicy, StopRule, parse_max_failures, parse_policy
from controller.report import ItemResult, ItemState
from controller.spec import SpecError, load_batch


def _result(state: ItemState, exit_code: int | None = None, reason: str | None = None, index: int = 0) -> ItemResult:
    return ItemResult(key=f"k{index}", index=index, job="flaky", state=state, exit_code=exit_code, reason=reason)


@pytest.mark.parametrize(
    ("result", "attempt", "expected"),
    [
        (_result(ItemState.FAILED, 137), 1, (True, "retried: exit code 137 is in retry.on")),
        (_result(ItemState.FAILED, 2), 1, (False, "not retried: exit code 2 is in retry.never")),
        (_result(ItemState.FAILED, 9), 1, (False, "not retried: exit code 9 is not in retry.on")),
        (_result(ItemState.FAILED, None, "no start"), 1, (True, "retried: an infrastructure failure is in retry.on")),
        (_result(ItemState.TIMED_OUT), 1, (False, "not retried: a timeout is not in retry.on")),
        (_result(ItemState.FAILED, 137), 3, (False, "not retried: no attempts left (3 of 3)")),
        (_result(ItemState.CANCELLED), 1, (False, "not retried: it was cancelled")),
        # Another attempt of an item whose outcome is unknown could run it twice.
        (
            _result(ItemState.FAILED, None, "outcome unknown: lost"),
            1,
            (False, "not retried: its outcome is unknown, and another attempt could run it twice"),
        ),
    ],
)
def test_what_each_failure_decides(result: ItemResult, attempt: int, expected: tuple[bool, str]) -> None:
    policy = RetryPolicy(attempts=3, on=[137, "infrastructure"], never=[2])
    assert policy.decide(result, attempt) == expected


def test_a_refused_launch_is_an_infrastructure_failure_and_backoff_doubles_to_its_cap() -> None:
    policy = RetryPolicy(on=["infrastructure"], backoff="2s", backoff_max="5s", attempts=5)
    assert policy.decide(_result(ItemState.NOT_LAUNCHED), 1, refused=True) == (
        True,
        "retried: an infrastructure failure is in retry.on",
    )
    assert [policy.wait_seconds(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]


def test_max_failures_reads_counts_and_shares() -> None:
    assert parse_max_failures(10) == 10
    assert parse_max_failures("10") == 10
    assert parse_max_failures("5%") == 0.05
    assert parse_max_failures(0.25) == 0.25
    assert StopRule(0.05).threshold(200) == 10
    assert StopRule(0.001).threshold(200) == 1
    for bad in (0, -1, "0%", "lots", True, 1.5):
        with pytest.raises(ValueError, match="max_failures"):
            parse_max_failures(bad)


def test_bad_policies_are_refused_with_their_place(catalog: Catalog) -> None:
    spec = {
        "max_failures": "x",
        "defaults": {"job": "flaky", "retry": {"attempts": 11, "on": [0, "reboot"]}},
        "items": [{}],
    }
    with pytest.raises(SpecError) as caught:
        load_batch(spec, catalog)
    problems = "\n".join(caught.value.problems)
    assert "defaults.retry.attempts" in problems
    assert "defaults.retry.on" in problems
    assert "max_failures" in problems
    items = {"items": [{"job": "flaky", "retry": {"never": ["timeout"], "backoff": "2 hours"}}]}
    with pytest.raises(SpecError) as caught:
        load_batch(items, catalog)
    problems = "\n".join(caught.value.problems)
    assert "items[0].retry.never[0]" in problems
    assert "items[0].retry.backoff" in problems


def test_retry_and_max_failures_options() -> None:
    options = RunOptions.from_parameters({"retry": {"attempts": 2, "on": [137]}, "max_failures": "5%"})
    assert options.retry_policy == RetryPolicy(attempts=2, on=[137])
    assert parse_policy(["attempts=3", "on=137,143,infrastructure", "backoff=1s"]) == {
        "attempts": "3",
        "on": [137, 143, "infrastructure"],
        "backoff": "1s",
    }
    with pytest.raises(OptionError, match="retry: attempts"):
        RunOptions.from_parameters({"retry": {"attempts": 0}})
    with pytest.raises(OptionError, match="max_failures"):
        RunOptions.from_parameters({"max_failures": "none"})
    with pytest.raises(OptionError, match="NAME=VALUE"):
        RunOptions.from_parameters({"retry": ["tries=3"]})


def test_retries_of_a_packed_launch_go_out_together_after_their_backoff(catalog: Catalog) -> None:
    spec = {
        "defaults": {"job": "flaky", "retry": {"attempts": 2, "backoff": 10}},
        "items": [{"args": [str(n)]} for n in range(5)],
    }
    batch = load_batch(spec, catalog)
    [launch] = plan(batch, catalog, mode=Mode.PACKED).launches
    attempts = Attempts(batch)
    results = [_result(ItemState.FAILED, 3, index=n) for n in (0, 2, 4)] + [
        _result(ItemState.SUCCEEDED, 0, index=n) for n in (1, 3)
    ]

    assert attempts.ended(launch, results, now=100.0) == {0, 2, 4}
    assert attempts.due(109.0) == []
    assert attempts.next_due() == 110.0
    [(template, items, attempt)] = attempts.due(110.0)
    assert (template, [item.index for item in items], attempt) == (launch, [0, 2, 4], 2)
    assert attempts.failed == 0  # all three are retried: none failed for good yet
