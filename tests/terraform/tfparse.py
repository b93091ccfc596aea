"""Reading the Terraform module with python-hcl2: its structure, which tests check without running terraform
(test_terraform_cli.py runs the binary against the provider's schema)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
_INTERPOLATION = re.compile(r"^\$\{(.*)\}$", re.DOTALL)


def clean(node: Any) -> Any:
    """hcl2's tree without its bookkeeping keys, with quoted literals unquoted."""
    if isinstance(node, dict):
        return {clean_key(k): clean(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [clean(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"' and "${" not in node:
        return node[1:-1]
    return node


def clean_key(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def expression(value: Any) -> str | None:
    """The expression inside ``${...}``, or None for a literal."""
    if isinstance(value, str) and (match := _INTERPOLATION.match(value)):
        return match.group(1)
    return None


def load_dir(directory: Path) -> dict[str, list[Any]]:
    """Every top-level block of every .tf file in ``directory``, merged by block type."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            for kind, blocks in clean(hcl2.load(handle)).items():
                merged.setdefault(kind, []).extend(blocks if isinstance(blocks, list) else [blocks])
    return merged


def resources(module: dict[str, list[Any]], kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for block in module.get("resource", []):
        for name, body in block.get(kind, {}).items():
            found[name] = body
    return found


def locals_of(module: dict[str, list[Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in module.get("locals", []):
        merged.update(block)
    return merged


def variables_of(module: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for block in module.get("variable", []):
        merged.update(block)
    return merged
