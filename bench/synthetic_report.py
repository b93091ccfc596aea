"""A synthetic report: seeded, mixed outcomes, retries and hostile log lines; for the report tests and the
report page's benchmark (``python -m bench.report_page``)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from controller.batchfolder import reader, write_items
from controller.report import (
    ItemResult,
    ItemState,
    LaunchResult,
    LaunchStatus,
    Report,
    StoredItems,
    Summary,
    TaskResult,
    batch_status,
    summarize,
)
from controller.store import LocalStore

HOSTILE = "</script><img src=x onerror=alert(1)> [red]markup[/red] | `tick` <!-- \x1b[31mred"
BATCH_START = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
PROJECT = "demo-project"
REGION = "europe-west1"
PACK = 100  # items per packed launch

# Weights loosely shaped like a real bad day: mostly successes, a long tail of the rest.
_STATES = [
    ItemState.SUCCEEDED,
    ItemState.FAILED,
    ItemState.TIMED_OUT,
    ItemState.CANCELLED,
    ItemState.NOT_LAUNCHED,
]
_WEIGHTS = [90, 5, 2, 1, 2]


def _execution(launch: int) -> str:
    return f"projects/{PROJECT}/locations/{REGION}/jobs/worker/executions/worker-{launch:05d}"


def build_report(
    n: int,
    *,
    seed: int = 7,
    hostile_every: int = 97,
    states: list[ItemState] | None = None,
    store: LocalStore | None = None,
) -> Report:
    """A report of ``n`` items with mixed outcomes, retries, and some hostile log lines, deterministic per seed.
    With ``store``, its items are written there as a v2 report's shards as they are made (a million of them
    would not fit in memory as a list) and read from there."""
    made = _items(n, seed=seed, hostile_every=hostile_every, states=states)
    if store is None:
        items: list[ItemResult] | StoredItems = list(made)
        summary = summarize(items, launches=-(-n // PACK), duration_seconds=3900.0)
    else:
        shards, tally = write_items(store, "batch-demo", made)
        items = StoredItems(shards, reader(store, "batch-demo"))
        summary = tally.summary(launches=-(-n // PACK), duration_seconds=3900.0)
    return _report(n, items, summary)


def _items(n: int, *, seed: int, hostile_every: int, states: list[ItemState] | None) -> Iterator[ItemResult]:
    rng = random.Random(seed)
    for index in range(n):
        state = states[index % len(states)] if states else rng.choices(_STATES, _WEIGHTS)[0]
        launch = index // PACK
        execution = _execution(launch)
        key = f"item-{index:05d}"
        console_url = (
            f"https://console.cloud.google.com/run/jobs/executions/details/{REGION}/worker-{launch:05d}/tasks"
            f"?project={PROJECT}"
        )
        log_url = f"https://console.cloud.google.com/logs/query;query=labels.key%3D{key}?project={PROJECT}"
        if state is ItemState.NOT_LAUNCHED:
            yield ItemResult(key=key, index=index, job="worker", state=state, reason="batch cancelled before launch")
            continue
        start = BATCH_START + timedelta(seconds=rng.uniform(0, 3600))
        duration = rng.uniform(5, 300)
        attempts = rng.choice([1, 1, 2, 3]) if state is not ItemState.SUCCEEDED else rng.choice([1] * 9 + [2])
        exit_code = {ItemState.SUCCEEDED: 0, ItemState.FAILED: rng.choice([1, 2, 137])}.get(state)
        reason = {
            ItemState.FAILED: f"exited with code {exit_code} after {attempts} attempts",
            ItemState.TIMED_OUT: "killed at the task timeout of 300s",
            ItemState.CANCELLED: "cancelled by the user",
        }.get(state)
        tail = [
            f"{key} step {step}: processing shard {rng.randrange(1000)}" for step in range(rng.randint(1, 6))
        ]
        if index % hostile_every == 0:
            tail.append(HOSTILE)
            reason = (reason or "") + " " + HOSTILE if state is not ItemState.SUCCEEDED else reason
        if state is ItemState.FAILED:
            tail.append(f"Traceback: ValueError: bad input in {key}")
        end = start + timedelta(seconds=duration)
        yield (
            ItemResult(
                key=key,
                index=index,
                job="worker",
                label=f"shard {index}",
                state=state,
                reason=reason,
                exit_code=exit_code,
                attempts=attempts,
                launch=launch,
                execution=execution,
                task_index=index % PACK,
                tasks=[
                    TaskResult(
                        index=index % PACK,
                        state=state,
                        exit_code=exit_code,
                        attempts=attempts,
                        start_time=start,
                        end_time=end,
                    )
                ],
                create_time=start - timedelta(seconds=2),
                start_time=start,
                end_time=end,
                console_url=console_url,
                log_url=log_url,
                log_tail=tail,
                log_tail_truncated=len(tail) > 4,
            )
        )


def _report(n: int, items: list[ItemResult] | StoredItems, summary: Summary) -> Report:
    launches = [
        LaunchResult(
            index=launch,
            key=f"batch-demo-{launch}",
            job="worker",
            packed=True,
            items=min(PACK, n - launch * PACK),
            execution=_execution(launch),
            state=LaunchStatus.SUCCEEDED,
        )
        for launch in range((n + PACK - 1) // PACK)
    ]
    return Report(
        batch_id="batch-demo",
        status=batch_status(summary, cancelled=False),
        spec_digest="sha256:0123456789abcdef",
        project=PROJECT,
        region=REGION,
        mode="packed",
        started_at=BATCH_START,
        finished_at=BATCH_START + timedelta(seconds=3900),
        summary=summary,
        launches=launches,
        item_shards=list(items.shards) if isinstance(items, StoredItems) else None,
        items=items,
        problems=[f"one launch was retried: {HOSTILE}"],
    )
