"""Helpers for the example jobs' tests: the jobs are scripts, not packages, so they are loaded by path."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from testenv import fake_gcs_server

JOBS_DIR = Path(__file__).resolve().parents[2] / "jobs"


def load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def job_module() -> Callable[[str], ModuleType]:
    """``job_module("wordcount")`` is jobs/wordcount/main.py as a module."""

    def load(job: str) -> ModuleType:
        return load_script(JOBS_DIR / job / "main.py", f"fanout_job_{job}")

    return load


@pytest.fixture(scope="session")
def runner() -> ModuleType:
    return load_script(JOBS_DIR / "runner" / "fanout_runner.py", "fanout_runner")


@pytest.fixture(scope="module")
def fake_gcs() -> Iterator[str]:
    """A fake-gcs-server of the module's own, its URL; the session's STORAGE_EMULATOR_HOST is restored after."""
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    with fake_gcs_server() as server:
        yield server.url
    if saved is not None:
        os.environ["STORAGE_EMULATOR_HOST"] = saved
