"""The end-to-end suite runs on a kind cluster and needs a Docker engine.

Everything under tests/e2e is marked ``e2e``. When no Docker engine answers (``docker
info`` fails) or ``kind`` is not on PATH, every test here is skipped with the reason,
printed after collection and in pytest's summary (``-ra``). Nothing is probed unless e2e
tests remain selected.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_skipped_because: list[str] = []


@cache
def missing_prerequisite() -> str | None:
    """Why the e2e suite cannot run here, or None when it can."""
    if shutil.which("kind") is None:
        return "`kind` is not on PATH (https://kind.sigs.k8s.io/docs/user/quick-start/)"
    if shutil.which("docker") is None:
        return "no `docker` CLI on PATH, so no Docker engine to run kind on"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s: no Docker engine reachable"
    if info.returncode != 0:
        detail = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine reachable (`docker info` failed: {detail})"
    return None


def _ours(items: list[pytest.Item]) -> list[pytest.Item]:
    return [item for item in items if item.path.is_relative_to(HERE)]


@pytest.hookimpl(tryfirst=True)  # before -m selection, so that `-m e2e` selects them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in _ours(items):
        item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(tryfirst=True)  # before the terminal reporter prints the collection
def pytest_collection_finish(session: pytest.Session) -> None:
    # After -m/-k selection: probe Docker only when an e2e test is going to run.
    ours = _ours(session.items)
    reason = missing_prerequisite() if ours else None
    if reason is None:
        return
    _skipped_because.append(reason)
    skip = pytest.mark.skip(reason=f"e2e suite skipped: {reason}")
    for item in ours:
        item.add_marker(skip)


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    if _skipped_because:
        return f"e2e suite skipped: {_skipped_because[0]}"
    return None
