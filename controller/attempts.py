"""The items' attempts while a batch runs: the attempts of each item that failed one under a retry policy, the
retries waiting out their backoff, and how many items failed for good (what the batch's stop rule counts).

Bookkeeping only: the runner (``batch.py``) hands it each launch's item results as the launch ends, takes the
retries that are due and launches them (``plan.retry_launch``), and asks whether the batch should stop.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from controller.plan import Launch
from controller.policy import RetryPolicy, StopRule
from controller.report import Attempt, ItemResult, ItemState
from controller.spec import Batch, Item

# What an item that failed for good ended as; a cancelled item, or one that never launched, did not fail.
_FAILED = frozenset({ItemState.FAILED, ItemState.TIMED_OUT})


@dataclass(frozen=True)
class Retry:
    """An item waiting for its next attempt: launched like ``template`` once the clock reaches ``due``."""

    item: Item
    template: Launch
    attempt: int
    due: float


class Attempts:
    """Per item, its attempts; per batch, the retries waiting and the count of items that failed for good.

    ``retry`` replaces the spec's ``defaults.retry`` (``--retry``); an item's own policy wins over both.
    """

    def __init__(self, batch: Batch, *, retry: RetryPolicy | None = None, stop: StopRule | None = None) -> None:
        self._default = retry or batch.retry
        self._own = any(item.retry for item in batch.items)
        self.stop = stop or batch.stop
        self.threshold = self.stop.threshold(len(batch.items)) if self.stop else None
        self.failed = 0  # items that failed for good, as far as ended launches tell
        self.waiting: list[Retry] = []
        self._history: dict[int, list[Attempt]] = {}  # by item index: only items that failed an attempt
        self._superseded: Counter[str] = Counter()  # states of attempts that a retry replaces, for progress
        self._lock = threading.Lock()

    @property
    def watched(self) -> bool:
        """Whether the runner needs each launch's item results as it ends (a retry policy or a stop rule)."""
        return self._default is not None or self._own or self.stop is not None

    def policy(self, item: Item) -> RetryPolicy | None:
        return item.retry or self._default

    def final_when_it_ends(self, item: Item, launch: Launch, result: ItemResult) -> bool:
        """Whether an item's result is its last as soon as its task ended, before its launch ended: it
        succeeded at its first try, or it failed with no retry policy to ask."""
        policy = self.policy(item)
        return policy is None or (result.state.ok and launch.attempt == 1)

    def may_retry(self, launch: Launch) -> bool:
        """Whether a failure among the launch's items might yet be retried (so is not counted while it runs)."""
        return any((p := self.policy(item)) is not None and launch.attempt < p.attempts for item in launch.items)

    def ended(
        self, launch: Launch, results: Iterable[ItemResult], now: float, *, refused: bool = False
    ) -> set[int]:
        """A launch ended (or Cloud Run refused it: ``refused``): record each item's attempt, queue its retry
        when its policy says so, and count it when it failed for good. Returns the indices of the items retried."""
        items = {item.index: item for item in launch.items}
        retried_items: set[int] = set()
        with self._lock:
            for result in results:
                item = items[result.index]
                policy = self.policy(item)
                failed = result.state in _FAILED or refused
                if policy is None or (result.state.ok and item.index not in self._history):
                    self.failed += failed
                    continue
                retried, why = policy.decide(result, launch.attempt, refused=refused)
                record = Attempt(
                    attempt=launch.attempt,
                    launch=None if refused else launch.index,
                    state=result.state,
                    exit_code=result.exit_code,
                    reason=result.reason,
                    retry=why,
                )
                self._history.setdefault(item.index, []).append(record)
                if retried:
                    due = now + policy.wait_seconds(launch.attempt)
                    self.waiting.append(Retry(item, launch, launch.attempt + 1, due))
                    self._superseded[str(result.state)] += 1
                    retried_items.add(item.index)
                else:
                    self.failed += failed
        return retried_items

    def due(self, now: float) -> list[tuple[Launch, tuple[Item, ...], int]]:
        """The retries whose backoff is over, taken off the queue and grouped into launches: (a launch of
        theirs to copy, the items, the attempt). Packed items of one job, timeout and attempt share a launch,
        no larger than the largest launch they came from (which kept to Cloud Run's limits and the cap)."""
        with self._lock:
            ready = [r for r in self.waiting if r.due <= now]
            self.waiting = [r for r in self.waiting if r.due > now]
        groups: dict[tuple[str, float | None, int], list[Retry]] = {}
        out: list[tuple[Launch, tuple[Item, ...], int]] = []
        for retry in ready:
            if retry.template.packed:
                groups.setdefault((retry.template.job, retry.template.timeout_seconds, retry.attempt), []).append(retry)
            else:
                out.append((retry.template, (retry.item,), retry.attempt))
        for group in groups.values():
            size = max(r.template.task_count for r in group)
            group.sort(key=lambda r: r.item.index)
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                out.append((chunk[0].template, tuple(r.item for r in chunk), chunk[0].attempt))
        return out

    def next_due(self) -> float | None:
        with self._lock:
            return min((r.due for r in self.waiting), default=None)

    def give_up(self, why: str) -> None:
        """The batch stopped: the retries still waiting never launch; their last attempt is their result."""
        with self._lock:
            for retry in self.waiting:
                last = self._history[retry.item.index][-1]
                self._history[retry.item.index][-1] = replace(last, retry=f"not retried: {why}")
                self._superseded[str(last.state)] -= 1
                self.failed += last.state in _FAILED or last.launch is None
            self.waiting = []

    def stop_reason(self, in_flight: int) -> str | None:
        """Why the batch stops now, given ``in_flight`` items failed for good in launches still running; None
        while under the stop rule's threshold."""
        if self.stop is None or self.threshold is None or self.failed + in_flight < self.threshold:
            return None
        failed = self.failed + in_flight
        return f"stopped early: {failed:,} items failed, the limit is {self.threshold:,} (max_failures)"

    def progress(self, counts: Counter[str]) -> None:
        """Progress counts with the attempts that were retried counted as pending, not as failed."""
        with self._lock:
            for state, n in self._superseded.items():
                counts[state] -= n
            counts["pending"] += len(self.waiting)

    def with_histories(self, results: Iterable[ItemResult]) -> Iterator[ItemResult]:
        """Each item's last result (``Outcomes.item_results`` gives one per item, its latest launch's), with its
        history, one at a time as they are asked for: a million-item batch's are never all held."""
        for result in results:
            history = self._history.get(result.index)
            yield replace(result, history=self._closed(history, result)) if history else result

    def _closed(self, history: list[Attempt], result: ItemResult) -> list[Attempt]:
        """The history ending with the result's own attempt, recorded when its launch ended or read now."""
        if history[-1].launch == result.launch and history[-1].launch is not None:
            return list(history)
        if history[-1].retry.startswith("not retried"):
            return list(history)  # its last attempt ended the item (refused, or given up when the batch stopped)
        attempt = history[-1].attempt + 1
        why = "not retried: it succeeded" if result.state.ok else "not retried: the batch ended before it could be"
        record = Attempt(
            attempt=attempt,
            launch=result.launch,
            state=result.state,
            exit_code=result.exit_code,
            reason=result.reason,
            retry=why,
        )
        return [*history, record]


__all__ = ["Attempts", "Retry"]
