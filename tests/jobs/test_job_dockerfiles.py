"""Each example job's Dockerfile, read statically (no Docker engine here): pinned base, non-root user,
sources that exist, and an ENTRYPOINT that is the image-side twin of the job.yaml's local entrypoint."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

JOBS = Path(__file__).resolve().parents[2] / "jobs"
JOB_DIRS = sorted(path.parent for path in JOBS.glob("*/job.yaml"))
PINNED_BASE = re.compile(r"^[a-z0-9./-]+:\d+\.\d+\.\d+[-a-z0-9.]*@sha256:[0-9a-f]{64}$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    parsed = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        parsed.append((keyword.upper(), rest.strip()))
    return parsed


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), "exec form (a JSON array), so signals reach the program"
    assert all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(params=JOB_DIRS, ids=lambda p: p.name)
def job_dir(request) -> Path:
    return request.param


def test_there_are_at_least_three_example_jobs():
    assert {"hello", "wordcount", "flaky"} <= {path.name for path in JOB_DIRS}


def test_base_image_is_pinned_by_version_and_digest(job_dir):
    froms = [args for keyword, args in instructions(job_dir / "Dockerfile") if keyword == "FROM"]
    assert len(froms) == 1, "one stage: nothing to build, only files to copy"
    assert PINNED_BASE.match(froms[0].split()[0]), froms[0]


def test_runs_as_a_non_root_user_set_before_the_entrypoint(job_dir):
    steps = instructions(job_dir / "Dockerfile")
    keywords = [keyword for keyword, _ in steps]
    assert keywords.count("USER") == 1
    user = dict(steps)["USER"].split(":")[0]
    assert user not in ("root", "0", "")
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "RUN" not in keywords[keywords.index("USER") :], "nothing runs after dropping root that needs root"


def test_no_secrets_or_network_fetches(job_dir):
    for keyword, args in instructions(job_dir / "Dockerfile"):
        assert keyword != "ADD", "COPY only: ADD can fetch URLs and unpack archives"
        assert keyword != "ARG" or not re.search(r"(?i)token|secret|password|key", args)
        assert keyword != "ENV" or not re.search(r"(?i)token|secret|password", args)


def test_copied_sources_exist_in_the_jobs_build_context(job_dir):
    copies = [shlex.split(args) for keyword, args in instructions(job_dir / "Dockerfile") if keyword == "COPY"]
    assert copies
    for parts in copies:
        sources = [p for p in parts[:-1] if not p.startswith("--")]
        for source in sources:
            assert (JOBS / source).is_file(), f"{job_dir.name}/Dockerfile copies missing {source}"


def test_entrypoint_is_the_image_side_of_the_local_entrypoint(job_dir):
    steps = instructions(job_dir / "Dockerfile")
    destinations = {}
    for keyword, args in steps:
        if keyword == "COPY":
            *sources, destination = shlex.split(args)
            for source in sources:
                destinations[(JOBS / source).resolve()] = destination
    entrypoint = exec_form(dict(steps)["ENTRYPOINT"])
    local = yaml.safe_load((job_dir / "job.yaml").read_text())["local"]["entrypoint"]

    def in_image(arg: str) -> str:
        if arg == "{python}":
            return "python"
        if arg.startswith(("./", "../")):
            return destinations[(job_dir / arg).resolve()]
        return arg

    assert entrypoint == [in_image(arg) for arg in local]
    assert entrypoint[:2] == ["python", "/opt/fanout/fanout_runner.py"], "packable images start with the runner"


def test_healthcheck_is_explicitly_off(job_dir):
    assert ("HEALTHCHECK", "NONE") in instructions(job_dir / "Dockerfile")
