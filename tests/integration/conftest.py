"""Fixtures of the integration suite: real servers on loopback, no mocks.

- ``control_plane`` (session): etcd + kube-apiserver (+ kube-controller-manager), shared by
  every test; each test works in its own ``namespace``.
- ``prometheus``, ``start_prometheus``, ``alertmanager``, ``webhook_receiver``,
  ``metrics_exporter`` (function): fresh per test, closed afterwards.

Everything under tests/integration is marked ``integration``. When the test bed cannot
start (a binary is missing, a server fails) the tests FAIL with the reason and the server's
log tail; they are skipped only when MODELROLLOUT_SKIP_INTEGRATION=1 is set explicitly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from testbed.alertmanager import Alertmanager
from testbed.controlplane import ControlPlane
from testbed.exporter import MetricsExporter
from testbed.process import TestbedError
from testbed.prometheus import Prometheus, ScrapeTarget
from testbed.reloadable import ReloadableServer
from testbed.webhook import WebhookReceiver

HERE = Path(__file__).resolve().parent
SKIP_ENV = "MODELROLLOUT_SKIP_INTEGRATION"
_figures: dict[str, float] = {}

S = TypeVar("S", bound=ReloadableServer)


@pytest.hookimpl(tryfirst=True)  # before -m selection, so `-m integration` sees the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = os.environ.get(SKIP_ENV) == "1"
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
            if skip:
                item.add_marker(pytest.mark.skip(reason=f"{SKIP_ENV}=1 is set"))


def _fail(what: str, exc: BaseException) -> None:
    pytest.fail(
        f"the test bed could not start {what}:\n{exc}\n\n"
        f"Run `make setup` to install the tools; set {SKIP_ENV}=1 to skip these tests "
        "deliberately.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver (+ kube-controller-manager) for the whole session."""
    cp = ControlPlane()
    try:
        cp.start()
    except (TestbedError, OSError) as exc:
        _fail("the control plane (etcd, kube-apiserver)", exc)
    assert cp.start_seconds is not None
    _figures["control plane start, s"] = cp.start_seconds
    _figures["control plane RSS after start, MiB"] = cp.total_rss_bytes() / 2**20
    try:
        yield cp
        cp.check()  # a server that died during the session is a failure of the session
    finally:
        if cp.running:
            _figures["control plane RSS at session end, MiB"] = cp.total_rss_bytes() / 2**20
        cp.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}".lower()
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _started(server: S, what: str) -> S:
    try:
        server.start()
    except (TestbedError, OSError) as exc:
        server.close()
        _fail(what, exc)
    return server


@pytest.fixture
def metrics_exporter() -> Iterator[MetricsExporter]:
    """A loopback exporter whose series the test sets (``set``/``inc``)."""
    with MetricsExporter() as exporter:
        yield exporter


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Records every webhook delivered to its ``url``."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def prometheus() -> Iterator[Prometheus]:
    """A running Prometheus with no targets yet (``set_targets``), 1 s scrape/evaluation."""
    try:
        prom = Prometheus()
    except TestbedError as exc:
        _fail("Prometheus", exc)
    _started(prom, "Prometheus")
    try:
        yield prom
    finally:
        prom.close()


@pytest.fixture
def start_prometheus() -> Iterator[Callable[..., Prometheus]]:
    """``start_prometheus(targets, **kwargs)``: a started :class:`Prometheus` with the given
    targets, rules and Alertmanager, closed after the test. Cheaper than ``prometheus`` plus
    ``set_targets``: discovery happens once, at start (~5 s)."""
    started: list[Prometheus] = []

    def start(targets: Iterable[ScrapeTarget | str] = (), **kwargs: Any) -> Prometheus:
        try:
            prom = Prometheus(targets, **kwargs)
        except TestbedError as exc:
            _fail("Prometheus", exc)
        started.append(prom)
        return _started(prom, "Prometheus")

    yield start
    for prom in reversed(started):
        prom.close()


@pytest.fixture
def alertmanager(webhook_receiver: WebhookReceiver) -> Iterator[Alertmanager]:
    """A running Alertmanager delivering every alert to ``webhook_receiver`` within ~1 s."""
    try:
        am = Alertmanager(webhook_receiver.url)
    except TestbedError as exc:
        _fail("Alertmanager", exc)
    _started(am, "Alertmanager")
    try:
        yield am
    finally:
        am.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _figures:
        terminalreporter.section("test bed")
        for name, value in _figures.items():
            terminalreporter.write_line(f"{name}: {value:.1f}")
