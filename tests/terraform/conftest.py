"""The Terraform module, parsed once per session."""

from __future__ import annotations

from typing import Any

import pytest
from tfparse import TERRAFORM, load_dir


@pytest.fixture(scope="session")
def module() -> dict[str, list[Any]]:
    return load_dir(TERRAFORM)
