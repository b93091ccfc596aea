"""Shared pieces for the report tests: the synthetic report (bench/synthetic_report.py) and its hostile text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.synthetic_report import HOSTILE, build_report
from controller.report import BatchLink, ItemState, Report, Rerun


@pytest.fixture(scope="session")
def make_report() -> Callable[..., Report]:
    return build_report


@pytest.fixture(scope="session")
def hostile() -> str:
    """The untrusted text planted in log tails, reasons and problems."""
    return HOSTILE


@pytest.fixture(scope="session")
def linked() -> Callable[[Report, str], Report]:
    """The report as the rerun of batch ``nightly`` and rerun twice itself, the second rerun's report location
    carrying ``text`` (a report can be read from anywhere, so its links are untrusted text too)."""

    def link(report: Report, text: str) -> Report:
        def rerun(n: int, where: str) -> Rerun:
            return Rerun(
                batch_id=f"{report.batch_id}-rerun-{n}",
                report=where,
                states=[ItemState.FAILED],
                items=report.summary.not_succeeded,
                started_at=report.finished_at,
            )

        return report.model_copy(
            update={
                "rerun_of": BatchLink(batch_id="nightly", report="gs://bucket/fanout/nightly/report.json"),
                "reruns": [
                    rerun(1, f"gs://bucket/fanout/{report.batch_id}-rerun-1/report.json"),
                    rerun(2, f"/reports/{text}/report.json"),
                ],
            }
        )

    return link
