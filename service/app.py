"""The FastAPI application: routers assembled, error handling, and the service's lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from service.api import feedback, probes, prometheus, serving, suggestions
from service.api.errors import BodySizeLimit, install_error_handlers
from service.runtime import SuggestionService
from service.settings import Settings

API_VERSION = "1.0.0"


def create_app(
    settings: Settings | None = None, *, service: SuggestionService | None = None
) -> FastAPI:
    """The app of one process. Its lifespan starts and stops the service's threads."""
    if service is None:
        service = SuggestionService(settings if settings is not None else Settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        # What imports and start-up made (~160k objects: numpy, scipy, pandas, sklearn come
        # with LightGBM) lives as long as the process. Frozen, the collector's full passes
        # skip it; otherwise each one walks it all, ~60-80 ms with the event loop stopped,
        # several times a second under load (the p99 at concurrency 8 went from ~70 ms to
        # ~3 ms). Objects made later, such as loaded models, are collected as usual.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            service.stop()

    otel = service.settings.opentelemetry
    app = FastAPI(
        title="modelrollout suggestion service",
        version=API_VERSION,
        summary="Categories for bank and card transactions, from rules and LightGBM models "
        "rolled out by canary and shadow.",
        lifespan=lifespan,
        # Off by default: FastAPI otherwise asks OpenTelemetry for its providers on every
        # request (~13 us here, measured in-process); MODELROLLOUT_OPENTELEMETRY turns it on.
        telemetry=TelemetryConfig(tracing=otel, metrics=otel, logs=otel),
    )
    app.state.service = service
    suggestions.add_route(app.router)  # the busiest route: on the app's router itself
    for module in (feedback, serving, probes, prometheus):
        app.include_router(module.router)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit)  # added last: outermost, so bodies are bounded first

    return app
