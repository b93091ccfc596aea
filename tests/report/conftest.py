"""Shared pieces for the report tests: the synthetic report (bench/synthetic_report.py) and its hostile text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.synthetic_report import HOSTILE, build_report
from controller.report import Report


@pytest.fixture(scope="session")
def make_report() -> Callable[..., Report]:
    return build_report


@pytest.fixture(scope="session")
def hostile() -> str:
    """The untrusted text planted in log tails, reasons and problems."""
    return HOSTILE
