"""Results as they finish: a batch run in this process hands each item's result over as soon as it is its
last (its task ended and no retry follows), while the rest still run; the items that never ran come once the
report is written. Completion order by default, spec order with ``order_outputs=True``; a failed item is a
value (its ``ItemResult``) unless ``return_exceptions=False``, when it raises ``ItemFailed``.

``stream(batch, **parameters)`` runs the ``fan_out`` flow in a thread of its own and returns the stream;
``CloudRunJob.imap`` builds on it. A ``ResultStream`` is an iterator in sync code and an async iterator
(``async for``) in async code. A stream yields results as the watcher sees them: log tails come only in the
report (``.report`` once the stream is over).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from controller.report import ItemResult, Report

T = TypeVar("T")
_END = object()


class ItemFailed(Exception):
    """An item did not succeed, raised from a stream made with ``return_exceptions=False``."""

    def __init__(self, item: ItemResult) -> None:
        super().__init__(f"item {item.key} {item.state}: {item.reason or 'no reason given'}")
        self.item = item


class ResultStream(Generic[T]):
    """The results of one batch as its items end; each item once. ``run(sink)`` runs the batch, calling
    ``sink`` with every item's result, and returns its report and where it lies."""

    def __init__(
        self,
        run: Callable[[Callable[[ItemResult], None]], tuple[Report, str]],
        *,
        convert: Callable[[ItemResult, str], T],
        report_url: str,
        order_outputs: bool = False,
        return_exceptions: bool = True,
    ) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._convert = convert
        self._order = order_outputs
        self._raise = not return_exceptions
        self._held: dict[int, ItemResult] = {}  # spec order: results that came before their turn
        self._next = 0
        self.report: Report | None = None
        self.report_url = report_url
        self._error: BaseException | None = None
        context = contextvars.copy_context()  # the caller's Prefect context: a subflow run inside a flow
        self._thread = threading.Thread(target=context.run, args=(self._run, run), name="fanout-stream", daemon=True)
        self._thread.start()

    def _run(self, run: Callable[[Callable[[ItemResult], None]], tuple[Report, str]]) -> None:
        try:
            self.report, self.report_url = run(self._queue.put)
        except BaseException as exc:  # handed to the consumer, raised where it iterates
            self._error = exc
        finally:
            self._queue.put(_END)

    def _take(self, item: Any) -> T | None:
        """The value to yield for what the queue gave, or None while spec order holds it back."""
        if item is _END:
            self._thread.join()
            self._queue.put(_END)  # for the next call: the stream stays at its end
            if self._error is not None:
                raise self._error
            if not self._held:
                raise StopIteration
            item = self._held.pop(min(self._held))  # the batch ended: what is held waits for nothing more
        elif self._order:
            self._held[item.index] = item
            if self._next not in self._held:
                return None
            item = self._held.pop(self._next)
        self._next = item.index + 1 if self._order else self._next
        if self._raise and not item.state.ok:
            raise ItemFailed(item)
        return self._convert(item, self.report_url)

    def wait(self, timeout: float | None = None) -> Report | None:
        """Wait for the batch to end (it runs to its end even when nobody iterates any more); its report, or
        None when it has not ended within ``timeout`` or ended without one (iterating raises why)."""
        self._thread.join(timeout)
        return self.report

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while True:
            value = self._take(self._queue.get())
            if value is not None:
                return value

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            try:
                value = self._take(await asyncio.to_thread(self._queue.get))
            except StopIteration:
                raise StopAsyncIteration from None
            if value is not None:
                return value


def stream(
    batch: str | dict[str, Any],
    *,
    order_outputs: bool = False,
    return_exceptions: bool = True,
    **parameters: Any,
) -> ResultStream[ItemResult]:
    """Run a batch (``fan_out``'s ``batch`` and parameters) and stream its items' results as they end."""
    from controller.flow import fan_out, report_sink, result_sink

    def run(sink: Callable[[ItemResult], None]) -> tuple[Report, str]:
        captured: dict[str, Any] = {}
        tokens = [
            (result_sink, result_sink.set(sink)),
            (report_sink, report_sink.set(lambda report, url: captured.update(report=report, url=url))),
        ]
        try:
            fan_out(batch=batch, **{"fail_on_item_failure": False, **parameters})
        finally:
            for var, token in reversed(tokens):
                var.reset(token)  # type: ignore[attr-defined]
        return captured["report"], captured["url"]

    return ResultStream(
        run,
        convert=lambda item, _url: item,
        report_url="",
        order_outputs=order_outputs,
        return_exceptions=return_exceptions,
    )


__all__ = ["ItemFailed", "ResultStream", "stream"]
