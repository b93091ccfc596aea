"""Job sources: where the jobs an emulator starts with come from.

A product that uses the emulator registers a function in the ``cloudrun_emulator.job_sources`` entry-point
group (``pyproject.toml``: ``[project.entry-points."cloudrun_emulator.job_sources"]``). The command line calls
each with the ``--jobs-dir`` it was given (or None) and serves the jobs they return, so the emulator reads
no product's files and imports no product's code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from cloudrun_emulator.records import JobSeed

GROUP = "cloudrun_emulator.job_sources"


@dataclass(frozen=True)
class JobSource:
    """Jobs to create at start, and the local command each image without a ``command`` runs."""

    name: str
    jobs: list[JobSeed] = field(default_factory=list)
    local_images: dict[str, list[str]] = field(default_factory=dict)


JobSourceLoader = Callable[[Path | None], JobSource]


class JobSourceError(Exception):
    """A job source could not load its jobs; the message says which and why."""


def load_job_sources(jobs_dir: Path | None) -> list[JobSource]:
    """Every installed job source's jobs; raises JobSourceError when one fails."""
    sources = []
    for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
        loader: JobSourceLoader = point.load()
        try:
            sources.append(loader(jobs_dir))
        except (OSError, ValueError) as exc:
            raise JobSourceError(f"job source {point.name!r}: {exc}") from exc
    return sources
