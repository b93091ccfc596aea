"""The fault matrix (``tests/reliability/faults.py``): the quick subset, one cell per dependency, in every
``make test``; every cell with ``FANOUT_FAULTS=full`` (or ``python -m bench.faults``, which prints the
table docs/reliability.md shows)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.reliability.faults import QUICK, Cell, Matrix, all_cells, table

pytestmark = pytest.mark.slow(minutes=3)

CELLS = all_cells() if os.environ.get("FANOUT_FAULTS") == "full" else QUICK


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    with Matrix(tmp_path_factory.mktemp("faults")) as services:
        yield services


@pytest.mark.parametrize("cell", CELLS, ids=lambda cell: cell.name)
def test_the_invariants_hold(services: Matrix, cell: Cell, figures: object) -> None:
    outcome = services.run(cell)
    figures(f"fault matrix: {cell.name}", f"{'held' if outcome.held else 'broke'} ({outcome.seconds:.0f}s)")
    assert outcome.held, table([outcome])


def test_the_quick_cells_are_cells_of_the_matrix() -> None:
    assert set(QUICK) <= set(all_cells())
    assert {cell.dependency for cell in QUICK} == {cell.dependency for cell in all_cells()}
