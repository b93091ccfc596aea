"""Where a batch runs: a configured emulator, a project on Google Cloud, or, with neither, the embedded
emulator serving the catalog's jobs in the local project. The one choice ``fanout run``, the flow and
``CloudRunJob`` make the same way; ``clients.Endpoints`` then connects to whatever ``FANOUT_EMULATOR_HOST`` names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudrun_emulator import Emulator
    from controller.catalog import Catalog

LOCAL_PROJECT = "local-project"
EMULATOR_HOST = "FANOUT_EMULATOR_HOST"
DEFAULT_REGION = "us-central1"


@dataclass(frozen=True)
class Target:
    project: str
    on_cloud: bool  # Google Cloud itself, not an emulator
    embedded: Emulator | None = None  # to start (``serving``) when neither a project nor an emulator is configured


def choose_target(
    project: str | None, catalog: Catalog | None, *, region: str | None, report_to: str, emulator: str | None = None
) -> Target:
    """With an emulator configured (``emulator``, which is then named in ``FANOUT_EMULATOR_HOST``, or that
    variable), ``project`` or the local project on it; else ``project`` on Google Cloud; with neither, the
    local project on an embedded emulator serving the catalog's jobs and the report destination's buckets."""
    if emulator:
        os.environ[EMULATOR_HOST] = emulator
    if os.environ.get(EMULATOR_HOST):
        return Target(project or LOCAL_PROJECT, on_cloud=False)
    if project:
        return Target(project, on_cloud=True)
    from controller.emulator_jobs import catalog_emulator, report_buckets

    embedded = catalog_emulator(
        catalog, project=LOCAL_PROJECT, region=region or DEFAULT_REGION, local_buckets=report_buckets(report_to)
    )
    return Target(LOCAL_PROJECT, on_cloud=False, embedded=embedded)


@contextmanager
def serving(target: Target) -> Iterator[str | None]:
    """The target's embedded emulator, if it has one, started and named in ``FANOUT_EMULATOR_HOST`` for the
    time of the block (its URL), then stopped, the variable as it was before."""
    emulator = target.embedded
    if emulator is None:
        yield None
        return
    emulator.start()
    previous = os.environ.get(EMULATOR_HOST)
    os.environ[EMULATOR_HOST] = emulator.url
    try:
        yield emulator.url
    finally:
        emulator.stop()
        if previous is None:
            os.environ.pop(EMULATOR_HOST, None)
        else:
            os.environ[EMULATOR_HOST] = previous
