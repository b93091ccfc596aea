"""The emulator stands in for Google: it must not share code with the controller it is used to test."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import cloudrun_emulator

PACKAGE = Path(cloudrun_emulator.__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_module_of_the_emulator_imports_the_controller() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 10
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(m for m in _imported_modules(path) if m.split(".")[0] == "controller")
        for path in modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_importing_and_serving_the_emulator_loads_no_controller_module() -> None:
    code = (
        "import json, sys\n"
        "import cloudrun_emulator, cloudrun_emulator.__main__\n"
        "from cloudrun_emulator import Emulator\n"
        "with Emulator() as emu:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'controller')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_no_emulator_source_file_is_over_600_lines() -> None:
    lengths = {
        str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert {path: n for path, n in lengths.items() if n > 600} == {}
