"""Shared by every test suite. Keep it light: unit tests import nothing heavy through here.

Markers are declared in pyproject.toml (``--strict-markers``); each suite's conftest marks
its own directory (tests/integration -> ``integration``, tests/e2e -> ``e2e``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory."""
    return ROOT
