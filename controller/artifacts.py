"""The report in the Prefect UI: a Markdown artifact with the summary and a table artifact of failed items.

Artifacts are a view of a report that is already stored, so publishing them must never fail the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.utilities.context import get_flow_run_id

from controller.report import Report
from controller.summary import failed_rows, render_markdown

# Keys make the artifacts show on the Artifacts page and version them across runs of the flow; Prefect
# accepts only lowercase letters, digits and dashes.
REPORT_KEY = "fanout-report"
FAILED_ITEMS_KEY = "fanout-failed-items"
PROGRESS_KEY = "fanout-progress"
# At most one progress update per this many seconds, and one at the end: a 10,000-item batch finishes items
# far faster than the Prefect API should be called.
PROGRESS_INTERVAL_SECONDS = 2.0
# Counts of items that are not done yet (the rest of BatchRunner.counts() are end states).
_NOT_DONE = ("pending", "running")
TABLE_ROWS = 500

logger = logging.getLogger(__name__)


def report_html_link(report_url: str) -> str:
    """Where a person opens the HTML report: the file beside report.json, in the Cloud console for ``gs://``."""
    html = report_url.rsplit("/", 1)[0] + "/report.html"
    if html.startswith("gs://"):
        return "https://console.cloud.google.com/storage/browser/_details/" + html.removeprefix("gs://")
    return html


def _html_link_markdown(link: str) -> str:
    """The HTML report as Markdown: a link for a web address; a local path as code, which the UI shows as
    it is (an autolink of a path, ``<...>``, shows with its angle brackets)."""
    if link.startswith("https://"):
        return f"HTML report: [report.html]({link})"
    return f"HTML report: `{link}`"


class ProgressArtifact:
    """A Prefect progress artifact of a running batch: done/total items, updated at most every
    ``interval`` seconds of ``clock`` (and always when the count reaches the total). A no-op outside a flow
    run."""

    def __init__(
        self,
        batch_id: str,
        total: int,
        *,
        interval: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batch_id, self.total, self.interval, self.clock = batch_id, total, interval, clock
        self.artifact_id: UUID | None = None
        self._last_sent = -1
        self._last_time = 0.0
        self._broken = get_flow_run_id() is None

    def record(self, counts: Mapping[str, int]) -> None:
        """Take the runner's counts by state; sends when due."""
        done = self.total - sum(counts.get(name, 0) for name in _NOT_DONE)
        now = self.clock()
        if self._broken or done == self._last_sent:
            return
        if done < self.total and self.artifact_id is not None and now - self._last_time < self.interval:
            return
        self._last_sent, self._last_time = done, now
        self._send(done)

    def finish(self, total: int) -> None:
        """The last update, whatever the throttle: every item has ended."""
        if not self._broken and self._last_sent != total:
            self._last_sent = total
            self._send(total)

    def _send(self, done: int) -> None:
        percent = 100.0 * done / self.total if self.total else 100.0
        description = f"batch {self.batch_id}: {done:,} of {self.total:,} items done"
        try:
            if self.artifact_id is None:
                created = create_progress_artifact(  # type: ignore[call-arg]
                    progress=percent, key=PROGRESS_KEY, description=description, _sync=True
                )
                assert isinstance(created, UUID)  # _sync=True: the call ran, not a coroutine
                self.artifact_id = created
            else:
                update_progress_artifact(  # type: ignore[call-arg]
                    artifact_id=self.artifact_id, progress=percent, description=description, _sync=True
                )
        except Exception as exc:  # a view of the batch, like the other artifacts: never a reason to fail it
            self._broken = True
            # The error, not its traceback: an API that went away is the usual cause, and one line says so.
            logger.warning(
                "could not update the Prefect progress artifact of batch %s: %s: %s",
                self.batch_id,
                type(exc).__name__,
                exc,
            )


def publish_artifacts(report: Report, *, report_url: str | None = None) -> None:
    """Attach the report's summary and failed items to the current flow run; a no-op outside a flow run."""
    if get_flow_run_id() is None:
        logger.debug("not in a Prefect flow run; no artifacts for batch %s", report.batch_id)
        return
    failed = report.summary.not_succeeded
    shown = min(failed, TABLE_ROWS)
    # _sync=True: these functions return an un-awaited coroutine when the calling flow is async, which would
    # silently drop the artifact; this function is sync, so it asks for the sync path explicitly.
    _attempt(
        report,
        REPORT_KEY,
        lambda: create_markdown_artifact(  # type: ignore[call-arg]
            markdown=render_markdown(report, report_url=report_url)
            + (f"\n\n{_html_link_markdown(report_html_link(report_url))}" if report_url else ""),
            key=REPORT_KEY,
            description=f"Run report of batch {report.batch_id}: {report.status.value}",
            _sync=True,
        ),
    )
    _attempt(
        report,
        FAILED_ITEMS_KEY,
        lambda: create_table_artifact(  # type: ignore[call-arg]
            table=failed_rows(report, limit=TABLE_ROWS),
            key=FAILED_ITEMS_KEY,
            description=f"{shown:,} of {failed:,} items that did not succeed in batch {report.batch_id}",
            _sync=True,
        ),
    )


def _attempt(report: Report, key: str, create: Callable[[], object]) -> None:
    """Run one artifact call; each is tried on its own so a failed table still leaves the summary."""
    try:
        create()
    # Anything the Prefect client raises (HTTP status, transport, validation) lands here: the report is the
    # record and is stored elsewhere, so a broken artifact is worth a warning, not a failed batch.
    except Exception as exc:
        logger.warning(
            "could not publish Prefect artifact %s for batch %s: %s: %s", key, report.batch_id, type(exc).__name__, exc
        )
