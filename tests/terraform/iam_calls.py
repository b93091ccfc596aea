"""terraform/iam_calls.yaml, the table of API calls and the grants that allow them, and its rendering as
the table in terraform/README.md (run this file to print it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CALLS_FILE = REPO / "terraform" / "iam_calls.yaml"
README = REPO / "terraform" / "README.md"
BEGIN = "<!-- iam-calls: rendered from terraform/iam_calls.yaml by tests/terraform/iam_calls.py -->"
END = "<!-- iam-calls: end -->"


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CALLS_FILE.read_text(encoding="utf-8"))
    return data


def render(data: dict[str, Any] | None = None) -> str:
    """The README table: one row per call, grouped by identity in the file's order."""
    data = data or load()
    rows = [
        BEGIN,
        "| identity | API method | permissions | granted by | in the code |",
        "| --- | --- | --- | --- | --- |",
    ]
    for call in data["calls"]:
        where = f"`{call['code']}`" if "code" in call else f"planned: {call['planned']}"
        rows.append(
            f"| {call['identity']} | {call['method']} | {', '.join(f'`{p}`' for p in call['permissions'])} | "
            f"{', '.join(f'`{g}`' for g in call['grants'])} | {where} |"
        )
    rows.append(END)
    return "\n".join(rows)


if __name__ == "__main__":
    print(render())
