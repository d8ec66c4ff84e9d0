"""The end-to-end tier runs on a kind cluster that the project brings up itself.

Everything under tests/e2e is marked ``e2e``. The cluster comes from hack/cluster.sh
(kind, a node image built here, two schedulable nodes) and the images from
hack/images.sh; both install and start what they need (Debian's docker.io, dockerd),
so the tier needs Linux, a Docker engine or root to install one, and Go.

When it cannot run, every test here is skipped with the reason, printed after
collection and in pytest's summary (``-ra``). MODELROLLOUT_E2E=0 skips it on purpose;
MODELROLLOUT_E2E=1 runs it even where a plain ``make test`` would skip it (see
``budget_reason``). Nothing is probed unless e2e tests remain selected.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_skipped_because: list[str] = []


def _docker_answers() -> str | None:
    """None when `docker info` answers, else why not."""
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if info.returncode != 0:
        detail = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`docker info` failed: {detail}"
    return None


@cache
def missing_prerequisite() -> str | None:
    """Why the e2e tier cannot run here, or None when it can."""
    setting = os.environ.get("MODELROLLOUT_E2E", "")
    if setting == "0":
        return "MODELROLLOUT_E2E=0"
    if setting != "1":
        return (
            "off by default in plain `make test` (`make test-e2e` or MODELROLLOUT_E2E=1 runs it;"
            " measured here: ~30 min cold, ~15 min with the cluster and images cached)"
        )
    if platform.system() != "Linux":
        return "hack/cluster.sh builds the kind node image on Linux only"
    if shutil.which("go") is None:
        return "Go is needed to build kind and the node's binaries (hack/node-tools.sh)"
    docker_down = _docker_answers() if shutil.which("docker") else "no docker CLI"
    if docker_down is not None:
        can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
        if not can_install:
            return f"no Docker engine ({docker_down}), and not root with apt-get to install one"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m selection, so that `-m e2e` selects them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in _ours(items):
        item.add_marker(pytest.mark.e2e)
        # The first test's fixtures bring up the cluster, build and install (minutes).
        item.add_marker(pytest.mark.timeout(3600))


def _ours(items: list[pytest.Item]) -> list[pytest.Item]:
    return [item for item in items if item.path.is_relative_to(HERE)]


@pytest.hookimpl(tryfirst=True)  # before the terminal reporter prints the collection
def pytest_collection_finish(session: pytest.Session) -> None:
    # After -m/-k selection: probe only when an e2e test is going to run.
    ours = _ours(session.items)
    reason = missing_prerequisite() if ours else None
    if reason is None:
        return
    _skipped_because.append(reason)
    skip = pytest.mark.skip(reason=f"e2e tier skipped: {reason}")
    for item in ours:
        item.add_marker(skip)


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    if _skipped_because:
        return f"e2e tier skipped: {_skipped_because[0]}"
    return None
