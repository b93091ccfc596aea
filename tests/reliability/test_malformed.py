"""Malformed specs: every file of ``corpus/`` through ``fanout run FILE --emulator URL``: exit code 2, the
expected message on stderr (``corpus/expected.json``), no traceback, and not one API call on the emulator.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import EmulatorProcess, fanout

CORPUS = Path(__file__).with_name("corpus")
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())


def _generated(folder: Path) -> dict[str, dict[str, Any]]:
    """Cases too big to keep as files."""
    too_many_items = folder / "too-many-items.json"
    too_many_items.write_text(json.dumps({"items": [{"job": "hello"}] * 1_000_001}))
    too_many_env = folder / "too-many-env-vars.json"
    too_many_env.write_text(json.dumps({"items": [{"job": "hello", "env": {f"V{i}": "x" for i in range(1001)}}]}))
    long_number = folder / "integer-over-4300-digits.yaml"
    long_number.write_text("items:\n  - job: hello\n    task_count: " + "9" * 5000 + "\n")
    return {
        str(long_number): {"fragment": "a number in the spec has over 4,300 digits"},
        str(too_many_items): {"fragment": "items: List should have at most 1000000 items"},
        str(too_many_env): {"fragment": "at most 1000 env vars per container"},
    }


def _run(path: str, case: dict[str, Any], url: str, reports: Path) -> tuple[str, int, str, str]:
    proc = fanout(["run", path, "--emulator", url, "--report-to", str(reports), "--quiet", *case.get("args", [])])
    out, err = proc.communicate(timeout=120)
    return path, proc.returncode, out, err


@pytest.mark.slow
def test_every_malformed_spec_is_refused_before_any_api_call(
    emulator_process: EmulatorProcess, tmp_path: Path, figures: Any
) -> None:
    cases = {str(CORPUS / name): case for name, case in EXPECTED.items()} | _generated(tmp_path)
    files = {str(p) for p in CORPUS.iterdir() if p.name != "expected.json"}
    assert files <= set(cases), f"corpus files without an expected message: {sorted(files - set(cases))}"
    calls_before = emulator_process.api_calls()
    reports = tmp_path / "reports"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda item: _run(*item, emulator_process.url, reports), cases.items()))
    calls = emulator_process.api_calls() - calls_before
    failures = []
    for path, code, out, err in results:
        name = Path(path).name
        fragment = cases[path]["fragment"]
        if code != 2:
            failures.append(f"{name}: exit {code}, expected 2\n{err[-2000:]}")
        elif fragment not in err:
            failures.append(f"{name}: message lacks {fragment!r}:\n{err[:2000]}")
        elif "Traceback" in err or "Traceback" in out:
            failures.append(f"{name}: traceback:\n{err[-2000:]}")
        elif len(err) > 20_000:
            failures.append(f"{name}: {len(err)} characters of error output")
    good = len(results) - len(failures)
    figures("malformed specs refused with exit 2 and a clear message", f"{good}/{len(results)}")
    figures("malformed specs: API calls", calls)
    assert not failures, "\n\n".join(failures)
    assert calls == 0
    assert not reports.exists() or not any(reports.rglob("report.json"))
