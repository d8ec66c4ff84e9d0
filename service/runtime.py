"""The suggestion service assembled: state store, configuration source, pod report, suggester.

:class:`SuggestionService` is what the HTTP layer talks to (``request.app.state.service``);
it owns the background threads and starts and stops them with the app's lifespan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from service.coalesce import Coalescer
from service.config_source import (
    ConfigMapSource,
    ConfigSource,
    FileConfigSource,
    StaticConfigSource,
    kube_api_client,
)
from service.events import EventCodec
from service.metric_names import NO_VERSION, FeedbackOutcome, Source
from service.metrics import ServiceMetrics
from service.pod_report import LeaseReporter
from service.rules import RuleEngine
from service.settings import ConfigSourceKind, Settings, legacy_serving_config
from service.state import ServingState, ServingStateStore
from service.suggest import Answer, Batch, Suggester

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

OTHER_VERSION = "other"
"""Feedback label for a model version this pod was never configured with (bounds labels)."""


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    served_by: Source
    model_version: str | None
    suggested: str
    outcome: FeedbackOutcome


class SuggestionService:
    """One process's service: configure it with :class:`Settings`, then :meth:`start`."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: ConfigSource | None = None,
        api_client: ApiClient | None = None,
        rules: RuleEngine | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics(target=settings.target)
        self.rules = rules or RuleEngine.default()
        key = settings.event_key.get_secret_value().encode() if settings.event_key else None
        self.events = EventCodec(key, ttl_seconds=settings.event_ttl_seconds)
        self.store = ServingStateStore(
            settings.effective_models_root(),
            self.metrics,
            num_threads=settings.predict_threads,
            retry_seconds=settings.load_retry_seconds,
            compile_cache=settings.effective_compile_cache(),
            published_trees=settings.published_trees,
        )
        self.suggester = Suggester(
            self.rules,
            self.metrics,
            self.events,
            faults=settings.fault_plan(),
            shadow_batch_rows=settings.shadow_batch_rows,
            shadow_cpu_share=settings.shadow_cpu_share,
            shadow_max_rows=settings.shadow_queue_rows,
            shadow_idle_priority=settings.shadow_idle_priority,
            shadow_process=settings.shadow_process,
            compile_cache=settings.effective_compile_cache(),
            published_trees=settings.published_trees,
            predict_threads=settings.predict_threads,
        )
        self.coalescer: Coalescer[ServingState] = Coalescer(
            self.suggest, max_rows=settings.inline_rows
        )
        self.fallback_config = legacy_serving_config(settings)
        self.reporter: LeaseReporter | None = None
        kind = settings.source_kind()
        if source is None:
            source = self._build_source(kind, api_client)
        self.source = source

    def _build_source(self, kind: ConfigSourceKind, api_client: ApiClient | None) -> ConfigSource:
        s = self.settings
        if kind is ConfigSourceKind.FILE:
            if s.config_file is None:
                raise ValueError("MODELROLLOUT_CONFIG_SOURCE=file needs MODELROLLOUT_CONFIG_FILE")
            return FileConfigSource(
                s.config_file, self.fallback_config, poll_seconds=s.file_poll_seconds
            )
        if kind is ConfigSourceKind.KUBE:
            if not s.namespace:
                raise ValueError("MODELROLLOUT_CONFIG_SOURCE=kube needs MODELROLLOUT_NAMESPACE")
            api = api_client or kube_api_client(s.kubeconfig)
            if s.report:
                self.reporter = LeaseReporter(
                    api, s.namespace, s.target, s.pod_name, lambda: self.store.current
                )
            return ConfigMapSource(api, s.namespace, s.target, self.fallback_config)
        return StaticConfigSource(self.fallback_config)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.store.start()
        if self.reporter is not None:
            self.store.add_listener(self.reporter.notify)
            self.reporter.start()
        self.source.start(self.store.submit)
        log.info(
            "suggestion service %s: configuration from %s, models under %s",
            self.settings.pod_name,
            self.source.kind,
            self.store.models_root,
        )

    def stop(self) -> None:
        self.suggester.shadow.stop()
        self.source.stop()
        if self.reporter is not None:
            self.reporter.stop()
        self.store.stop()

    # -- requests ----------------------------------------------------------------------

    @property
    def state(self) -> ServingState:
        return self.store.current

    def suggest(self, batch: Batch) -> tuple[ServingState, list[Answer]]:
        """Answers under the current state (read once), and that state."""
        state = self.store.current
        return state, self.suggester.suggest(state, batch)

    async def answer(self, batch: Batch) -> tuple[ServingState, list[Answer]]:
        """:meth:`suggest` from the event loop. Small requests are answered on the loop (a
        thread hop costs more than the work), together with the other small requests ready
        at the same time (:mod:`service.coalesce`); large ones on a worker thread, where the
        trees run without the GIL."""
        if len(batch) > self.settings.inline_rows:
            return await run_in_threadpool(self.suggest, batch)
        if self.settings.coalesce:
            return await self.coalescer.suggest(batch)
        return self.suggest(batch)

    def feedback(self, event_id: str, accepted_label: str) -> FeedbackResult:
        """Count feedback on the answer ``event_id`` names: ``EventIdError`` if it names none
        (or expired), ``DuplicateEventError`` if this pod counted it already."""
        event = self.events.redeem(event_id)
        version = event.model_version
        if version != NO_VERSION and version not in self.store.known_versions:
            version = OTHER_VERSION
        outcome = (
            FeedbackOutcome.ACCEPTED if accepted_label == event.label else FeedbackOutcome.REJECTED
        )
        self.metrics.count_feedback(event.served_by, version, outcome)
        return FeedbackResult(
            served_by=event.served_by,
            model_version=None if event.model_version == NO_VERSION else event.model_version,
            suggested=event.label,
            outcome=outcome,
        )

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` shows."""
        state = self.store.current
        return {
            "pod": self.settings.pod_name,
            "ready": state.ready,
            "generation": state.config.generation,
            "rollout": state.config.rollout,
            "applied_at": state.applied_at.isoformat() if state.applied else None,
            "config": state.config.model_dump(mode="json"),
            "models": [
                {
                    "role": role.value,
                    "version": model.version,
                    "load_seconds": round(model.load_seconds, 4),
                    "scorer": model.scorer,
                    "scorer_detail": model.scorer_detail,
                    "manifest": model.manifest.model_dump(mode="json"),
                }
                for role, model in sorted(state.models.items())
            ],
            "load_errors": dict(state.load_errors),
            "models_root": str(self.store.models_root),
            "config_source": self.source.status(),
            "report": self.reporter.status() if self.reporter is not None else None,
            "shadow": self._shadow_status(),
        }

    def _shadow_status(self) -> dict[str, Any]:
        queue = self.suggester.shadow
        process = queue.process
        return {
            "evaluated_in": "process" if process is not None else "thread",
            "scheduling": process.scheduling if process is not None else queue.scheduling,
            "pid": process.pid if process is not None else None,
            "process_starts": process.starts if process is not None else 0,
            "process_lost": process.lost if process is not None else 0,
            "process_scorers": dict(process.scorers) if process is not None else {},
            "compared_rows": queue.compared_rows,
            "shed_rows": queue.shed_rows,
            "pending_rows": queue.pending_rows,
        }
