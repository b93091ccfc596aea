"""The report in the Prefect UI: a Markdown artifact with the summary and a table artifact of failed items.

Artifacts are a view of a report that is already stored, so publishing them must never fail the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.utilities.context import get_flow_run_id

from controller.report import Report
from controller.summary import failed_rows, render_markdown

# Keys make the artifacts show on the Artifacts page and version them across runs of the flow; Prefect
# accepts only lowercase letters, digits and dashes.
REPORT_KEY = "fanout-report"
FAILED_ITEMS_KEY = "fanout-failed-items"
TABLE_ROWS = 500

logger = logging.getLogger(__name__)


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
            markdown=render_markdown(report, report_url=report_url),
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
    except Exception:
        logger.warning("could not publish Prefect artifact %s for batch %s", key, report.batch_id, exc_info=True)
