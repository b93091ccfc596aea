"""``fanout run`` in this process, to see what the command does inside: how often it reads the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudrun_emulator import Emulator
from controller import spec
from controller.cli import main
from controller.flow import prepared_batch, prepared_catalog, progress_sink, report_sink

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("isolated")
def test_a_run_reads_and_validates_its_spec_once(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reads: list[str] = []
    parse = spec.parse_text

    def counting(text: str | bytes, source: str = "<spec>") -> tuple[Any, str]:
        reads.append(source)
        return parse(text, source)

    monkeypatch.setattr(spec, "parse_text", counting)
    code = main(
        [
            "run", "examples/hello.yaml", "--emulator", emulator.url, "--project", emulator.project,
            "--report-to", str(tmp_path), "--batch-id", "read-once", "--poll-interval", "0.3", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert reads == ["examples/hello.yaml"]
    assert "all 25 items succeeded" in capsys.readouterr().out
    # Nothing of this run is left for the next one in this process.
    assert [var.get() for var in (prepared_batch, prepared_catalog, progress_sink, report_sink)] == [None] * 4
