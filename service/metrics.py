"""The service's Prometheus metrics, declared once with the names of :mod:`service.metric_names`.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (tests build many apps
in one process). Label values are bounded: roles and sources are enums, model versions are
the few a pod has configured, categories are the models' classes or the rules' categories.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from service import metric_names as names
from service.metric_names import FallbackReason, FeedbackOutcome, Source


def _counter_name(exposed: str) -> str:
    # prometheus_client appends _total to a counter's name itself.
    return exposed.removesuffix("_total")


class ServiceMetrics:
    """The metric contract, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, target: str = "") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.target = target
        """Added as ``target="<target>"`` to every exposed series (empty: not added)."""
        r = self.registry
        self.predictions = Counter(
            _counter_name(names.PREDICTIONS_TOTAL),
            "Answers returned, by who served them.",
            ["served_by", "model_version"],
            registry=r,
        )
        self.shadow_comparisons = Counter(
            _counter_name(names.SHADOW_COMPARISONS_TOTAL),
            "Shadow answers compared with the served one (top-1); category is the reference "
            "answer (what stable or rules said).",
            ["baseline", "baseline_version", "shadow_version", "category", "agree"],
            registry=r,
        )
        self.shadow_shed = Counter(
            _counter_name(names.SHADOW_SHED_TOTAL),
            "Shadow rows not compared because the shadow's CPU share or queue could not take "
            "them (reason cpu_budget, queue_full, stopped); the controller sees fewer samples.",
            ["reason", "shadow_version"],
            registry=r,
        )
        self.inference_seconds = Histogram(
            names.INFERENCE_SECONDS,
            "Time of one model or rules evaluation (one request, the requests answered "
            "together, or a group of shadow rows).",
            ["role", "model_version", "path"],
            buckets=names.INFERENCE_BUCKETS,
            registry=r,
        )
        self.suggestion_request_seconds = Histogram(
            names.SUGGESTION_REQUEST_SECONDS,
            "Server-side time of an answered POST /v1/suggestions, from the app receiving "
            "it to its answer handed to the server.",
            buckets=names.REQUEST_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            _counter_name(names.MODEL_ERRORS_TOTAL),
            "Model evaluations that raised; the request fell back to rules.",
            ["role", "model_version"],
            registry=r,
        )
        self.fallbacks = Counter(
            _counter_name(names.FALLBACKS_TOTAL),
            "Answers served by rules although a model was configured.",
            ["reason"],
            registry=r,
        )
        self.feedback = Counter(
            _counter_name(names.FEEDBACK_TOTAL),
            "User feedback on an answer.",
            ["served_by", "model_version", "outcome"],
            registry=r,
        )
        self.serving_generation = Gauge(
            names.SERVING_GENERATION,
            "The serving-configuration generation this process applies.",
            ["rollout"],
            registry=r,
        )
        self.model_loaded = Gauge(
            names.MODEL_LOADED,
            "1 for each loaded model.",
            ["role", "model_version"],
            registry=r,
        )
        self.model_load_errors = Counter(
            _counter_name(names.MODEL_LOAD_ERRORS_TOTAL),
            "Versions that failed verification or loading.",
            ["model_version"],
            registry=r,
        )
        self.compile_results = Counter(
            _counter_name(names.MODEL_COMPILATIONS_TOTAL),
            "Loaded versions whose trees were compiled to machine code (or stayed on LightGBM).",
            ["result"],
            registry=r,
        )
        for result in ("compiled", "published", "failed"):
            self.compile_results.labels(result)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        # Zero-valued series exist from the start, so rate() and absent() behave.
        for reason in FallbackReason:
            self.fallbacks.labels(reason.value)
        self._generation_rollout: str | None = None
        self._loaded: set[tuple[str, str]] = set()

    def set_generation(self, rollout: str | None, generation: int) -> None:
        label = rollout or ""
        if self._generation_rollout is not None and self._generation_rollout != label:
            self.serving_generation.remove(self._generation_rollout)
        self._generation_rollout = label
        self.serving_generation.labels(label).set(generation)

    def set_loaded(self, loaded: Mapping[Source, str]) -> None:
        """Exactly the given (role, version) pairs are 1; earlier ones disappear."""
        now = {(role.value, version) for role, version in loaded.items()}
        for gone in self._loaded - now:
            self.model_loaded.remove(*gone)
        for role, version in now:
            self.model_loaded.labels(role, version).set(1)
        self._loaded = now

    def count_feedback(self, served_by: Source, version: str, outcome: FeedbackOutcome) -> None:
        self.feedback.labels(served_by.value, version, outcome.value).inc()

    def prime_versions(self, versions: Iterable[tuple[Source, str]]) -> None:
        """Create the zero series of a newly configured version (predictions, errors)."""
        for role, version in versions:
            self.predictions.labels(role.value, version)
            self.model_errors.labels(role.value, version)

    def exposition(self) -> bytes:
        """The text format for ``GET /metrics``; every series carries the ``target`` label
        (:data:`~service.metric_names.TARGET_LABEL`), so the controller can scope its
        queries to one target whatever the scrape configuration attaches."""
        if not self.target:
            return generate_latest(self.registry)
        return generate_latest(_Labelled(self.registry, {names.TARGET_LABEL: self.target}))


class _Labelled(Collector):
    """A registry's metrics with fixed labels added to every sample (at exposition only)."""

    def __init__(self, registry: CollectorRegistry, labels: Mapping[str, str]) -> None:
        self._registry = registry
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        extra = self._labels
        for metric in self._registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [s._replace(labels={**s.labels, **extra}) for s in metric.samples]
            yield labelled
