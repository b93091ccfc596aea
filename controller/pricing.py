"""What a batch cost: vCPU-seconds and GiB-seconds from task spans and the jobs' limits, and an estimated price.

Cloud Run bills a job's task for the CPU and memory it was given (its limits, not what it used) for as long
as it runs, each span rounded up to the next 100 ms. The price here is an **estimate**: Tier 1 list prices,
no free tier (180,000 vCPU-seconds and 360,000 GiB-seconds a month per billing account), no committed use
discounts, no Tier 2 regions, nothing for requests, egress, logging or storage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.catalog import Catalog
from controller.limits import quantity
from controller.plan import Launch, Plan

if TYPE_CHECKING:
    from controller.report import TaskResult

# Cloud Run pricing, "Pricing for regions in Tier 1", row "Services with CPU always allocated / Jobs".
PRICE_SOURCE = "https://cloud.google.com/run/pricing"
PRICE_DATE = "2026-11-30"  # when the table below was read from PRICE_SOURCE
USD_PER_VCPU_SECOND = 0.000018
USD_PER_GIB_SECOND = 0.000002
ESTIMATE_NOTE = "estimate at Cloud Run Tier 1 list prices; no free tier, no discounts"
BILLING_STEP_SECONDS = 0.1
# The task timeout Cloud Run applies when the job sets none (the controller's one-off jobs set none).
DEFAULT_TASK_TIMEOUT_SECONDS = 600.0


def gib(memory: str) -> float:
    """A memory limit in GiB: "512Mi" -> 0.5."""
    return quantity(memory) / 2.0**30


@dataclass(frozen=True, slots=True)
class Usage:
    """Resources billed: vCPU-seconds and GiB-seconds, and their estimated price."""

    vcpu_seconds: float = 0.0
    gib_seconds: float = 0.0

    @property
    def cost_usd(self) -> float:
        return self.vcpu_seconds * USD_PER_VCPU_SECOND + self.gib_seconds * USD_PER_GIB_SECOND

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.vcpu_seconds + other.vcpu_seconds, self.gib_seconds + other.gib_seconds)


def billed_seconds(seconds: float) -> float:
    """A span as billed: rounded up to the next 100 ms (a float's noise below a microsecond is not a step)."""
    steps = math.ceil(round(max(seconds, 0.0) / BILLING_STEP_SECONDS, 6))
    return steps * BILLING_STEP_SECONDS


def usage(seconds: float, *, cpu: str, memory: str) -> Usage:
    """One task span of ``seconds`` with these limits."""
    billed = billed_seconds(seconds)
    return Usage(vcpu_seconds=billed * quantity(cpu), gib_seconds=billed * gib(memory))


def tasks_usage(tasks: Iterable[TaskResult], *, cpu: str, memory: str) -> Usage | None:
    """The usage of an item's tasks, from each task's start to its end; None when no task has both times."""
    spans = [(t.end_time - t.start_time).total_seconds() for t in tasks if t.start_time and t.end_time]
    if not spans:
        return None
    total = Usage()
    for seconds in spans:
        total += usage(seconds, cpu=cpu, memory=memory)
    return total


def total(usages: Iterable[Usage | None]) -> Usage:
    out = Usage()
    for one in usages:
        if one is not None:
            out += one
    return out


def launch_upper_bound(launch: Launch, plan: Plan, catalog: Catalog) -> Usage:
    """The most one launch can cost: every task runs every attempt to its timeout."""
    one_off = {job.name: job for job in plan.one_off_jobs}
    if launch.job in one_off:
        retries = one_off[launch.job].max_retries
        timeout = launch.timeout_seconds or DEFAULT_TASK_TIMEOUT_SECONDS
    else:
        job = catalog.jobs[launch.job]
        retries = job.max_retries
        timeout = launch.timeout_seconds or job.timeout_seconds
    one_attempt = usage(timeout, cpu=launch.cpu, memory=launch.memory)
    attempts = launch.task_count * (retries + 1)
    return Usage(one_attempt.vcpu_seconds * attempts, one_attempt.gib_seconds * attempts)


def plan_upper_bound(plan: Plan, catalog: Catalog) -> Usage:
    """The most the whole plan can cost (``fanout plan``): items x attempts x timeout x resources."""
    return total(launch_upper_bound(launch, plan, catalog) for launch in plan.launches)


def format_usage(use: Usage) -> str:
    """ "12.5 vCPU-s, 6.25 GiB-s, ~$0.00024" for people."""
    return f"{use.vcpu_seconds:,.1f} vCPU-s, {use.gib_seconds:,.1f} GiB-s, ~${format_usd(use.cost_usd)}"


def format_usd(amount: float) -> str:
    """Dollars with enough digits to see a small batch's cost: 0.00024, 1.23, 1,234.57 (never 2.4e-05)."""
    if amount >= 1:
        return f"{amount:,.2f}"
    if amount == 0:
        return "0"
    return f"{amount:.6f}".rstrip("0") if amount >= 0.000001 else "<0.000001"
