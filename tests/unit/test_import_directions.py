"""The imports of controller/ against what docs/architecture.md says of them: every module in one stage, each
importing only from its own stage or those before it, no circle, and the "may touch" column of the module
table true to the imports. Lazy imports (inside functions) and type-only ones count like any other."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "controller"
DOC = ROOT / "docs" / "architecture.md"
# The stages of the batch's data and the entry points above them, in the order they may import each other.
STAGES_HEADING = "## Stages and import directions"
# Types that live in a module that touches something: importing them alone touches nothing. The execution
# domain types are still in the Cloud Run adapter; the catalog's models are read from files only by its loaders.
DOMAIN_TYPES = {
    "cloudrun": {"ExecutionOutcome", "ExecutionStatus", "TaskStatus"},
    "catalog": {"Catalog", "CatalogError", "JobDefinition", "Volume", "VpcAccess"},
    "spec": {"BATCH_ID_RULE", "MAX_SPEC_BYTES", "Batch", "Item", "SpecError", "is_batch_id", "new_batch_id"},
}
NOTHING = ("nothing", "nothing (pure)")


def _modules() -> set[str]:
    return {path.stem for path in PACKAGE.glob("*.py")}


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())  # each module parsed once for all the tests


def _imports(module: str, modules: set[str]) -> dict[str, set[str]]:
    """The controller modules ``module`` imports, each with the names taken from it ("*" for the module)."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(_tree(PACKAGE / f"{module}.py")):
        if isinstance(node, ast.ImportFrom) and node.module == "controller":
            for alias in node.names:
                if alias.name in modules:
                    found.setdefault(alias.name, set()).add("*")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("controller."):
            found.setdefault(node.module.split(".")[1], set()).update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("controller."):
                    found.setdefault(alias.name.split(".")[1], set()).add("*")
    found.pop(module, None)
    return found


def _table(heading: str | None) -> list[list[str]]:
    """The rows of the first Markdown table after ``heading`` (None: after "## Modules"), as cells."""
    text = DOC.read_text()
    start = text.index(heading or "## Modules")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # past the header


def _named(cell: str) -> list[str]:
    return [name.removesuffix(".py") for name in re.findall(r"`([a-z_]+)\.py`", cell)]


def _stages() -> dict[str, int]:
    stage_of: dict[str, int] = {}
    for order, (_, modules, *_) in enumerate(_table(STAGES_HEADING)):
        for name in _named(modules):
            assert name not in stage_of, f"{name}.py is in two stages of {DOC.name}"
            stage_of[name] = order
    return stage_of


def _touches() -> dict[str, str]:
    touch: dict[str, str] = {}
    for modules, _, may_touch in _table(None):
        for name in _named(modules):
            touch[name] = may_touch
    return touch


def _rows() -> dict[str, int]:
    return {name: row for row, (modules, *_) in enumerate(_table(None)) for name in _named(modules)}


def test_every_module_has_a_stage_and_a_row() -> None:
    modules = _modules() - {"__init__"}
    assert sorted(modules - _stages().keys()) == [], f"modules with no stage in {DOC.name}"
    assert sorted(_stages().keys() - modules) == [], f"stages in {DOC.name} name modules that do not exist"
    assert sorted(modules - _touches().keys()) == [], f"modules with no row in {DOC.name}'s module table"


def test_modules_import_only_from_their_stage_or_before() -> None:
    modules, stage_of = _modules(), _stages()
    stage_of["__init__"] = max(stage_of.values())  # the package's lazy CloudRunJob: an entry point
    wrong = [
        f"{module}.py imports {target}.py"
        for module in sorted(modules)
        for target in sorted(_imports(module, modules))
        if stage_of[target] > stage_of[module]
    ]
    assert wrong == []


def test_there_is_no_import_circle() -> None:
    modules = _modules()
    graph = {module: set(_imports(module, modules)) for module in modules}
    assert [sorted(circle) for circle in _strongly_connected(graph) if len(circle) > 1] == []


def test_the_may_touch_column_names_what_each_module_reaches_through_its_imports() -> None:
    """A module that imports an adapter (a module whose row says it touches something) names it in its own
    "may touch" cell, or says "all of the above"; a module that touches nothing imports no adapter. The
    modules of one row are one unit: their imports of each other are theirs."""
    modules, touch, row = _modules(), _touches(), _rows()
    adapters = {name for name, cell in touch.items() if cell not in NOTHING}
    wrong = []
    for module in sorted(modules - {"__init__"}):
        cell = touch[module]
        for target, names in sorted(_imports(module, modules).items()):
            if target not in adapters or row[target] == row[module] or names <= DOMAIN_TYPES.get(target, set()):
                continue
            if cell in NOTHING or (target not in _named(cell) and "all of the above" not in cell):
                wrong.append(f"{module}.py imports {target}.py, which touches {touch[target]!r}; its row says {cell!r}")
    assert wrong == []


def test_the_emulator_is_reached_only_through_its_adapter() -> None:
    users = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(_tree(path)):
            named = [node.module] if isinstance(node, ast.ImportFrom) else []
            named += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(name and name.split(".")[0] == "cloudrun_emulator" for name in named):
                users.add(path.stem)
    # emulator_jobs serves the catalog on it; target names its type; cli hands `fanout emulator` to its CLI.
    assert users <= {"emulator_jobs", "target", "cli"}


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found
