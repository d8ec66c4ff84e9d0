"""The controller's own metrics (its /metrics port), and the small HTTP app serving them.

- ``modelrollout_controller_rollout_phase`` (gauge; namespace, name, phase): 1 for the
  current phase of each rollout
- ``modelrollout_controller_canary_percent`` / ``..._shadow_percent`` (gauge; namespace,
  name): the effective percentages served
- ``modelrollout_controller_analyses_total`` (counter; outcome)
- ``modelrollout_controller_rollbacks_total`` (counter; reason)
- ``modelrollout_controller_transitions_total`` (counter; to, reason)
- ``modelrollout_controller_webhook_requests_total`` (counter; result)
- ``modelrollout_controller_tick_seconds`` (histogram): one reconciliation of one rollout

plus prometheus-client's process metrics (CPU seconds, resident memory).
"""

from __future__ import annotations

import contextlib
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from controller.model import Phase

PREFIX: Final = "modelrollout_controller"

disable_created_metrics()  # type: ignore[no-untyped-call]

ROLLOUT_PHASE = Gauge(
    f"{PREFIX}_rollout_phase",
    "1 for the current phase of a rollout",
    ["namespace", "name", "phase"],
)
CANARY_PERCENT = Gauge(
    f"{PREFIX}_canary_percent", "Effective canary percent served", ["namespace", "name"]
)
SHADOW_PERCENT = Gauge(
    f"{PREFIX}_shadow_percent", "Effective shadow percent served", ["namespace", "name"]
)
ANALYSES = Counter(f"{PREFIX}_analyses", "Analyses counted, by outcome", ["outcome"])
ROLLBACKS = Counter(f"{PREFIX}_rollbacks", "Rollbacks, by reason", ["reason"])
TRANSITIONS = Counter(f"{PREFIX}_transitions", "Phase transitions", ["to", "reason"])
WEBHOOK_REQUESTS = Counter(
    f"{PREFIX}_webhook_requests", "Alertmanager webhook requests, by result", ["result"]
)
TICK_SECONDS = Histogram(
    f"{PREFIX}_tick_seconds",
    "Time of one reconciliation of one rollout",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def set_phase(namespace: str, name: str, phase: Phase, canary: float, shadow: float) -> None:
    for p in Phase:
        ROLLOUT_PHASE.labels(namespace, name, p.value).set(1.0 if p == phase else 0.0)
    CANARY_PERCENT.labels(namespace, name).set(canary)
    SHADOW_PERCENT.labels(namespace, name).set(shadow)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted rollout's series."""
    for p in Phase:
        with contextlib.suppress(KeyError):
            ROLLOUT_PHASE.remove(namespace, name, p.value)
    for gauge in (CANARY_PERCENT, SHADOW_PERCENT):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


def metrics_app() -> web.Application:
    """``/metrics`` and ``/healthz``."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
