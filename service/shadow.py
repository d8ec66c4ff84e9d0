"""Shadow comparisons evaluated off the answer's path, many requests' rows at a time.

A shadow answer is never returned, only compared with the served one, so it need not be
computed before the response is sent. Under load with 100% shadow, evaluating the shadow
model for every small request (or every coalesced group of two or three) costs as much as
evaluating the serving model, while most of that cost is fixed per call: the compiled trees
take about 10 us for one row and about 3 us a row for 32.

So the suggester hands the rows a shadow must see to a :class:`ShadowQueue` (their feature
rows, already computed for serving, and what was served), and the queue evaluates them
together once it holds ``batch_rows`` rows, or when the metrics are read: the queue is
flushed before every collection of the registry (:meth:`ServiceMetrics.before_collect`),
so a Prometheus scrape, ``GET /metrics`` and a test reading a counter always see every
comparison of the requests answered before it. Nothing waits on a timer, and the queue
never holds more than ``batch_rows`` rows plus what one turn of the event loop adds. On
the event loop the full queue is evaluated in the loop's next turn, after the responses of
the current one are written, so no request waits for other requests' shadows.

Each chunk keeps the model object it was routed to, so a comparison is counted under the
version that was configured when the request was answered, even if the configuration
changed since. A model that raises here is counted in ``modelrollout_model_errors_total``
and its comparisons are dropped, as when it raised on the answer's path; anything else
that goes wrong in a flush is logged and drops that group, never failing the request or
the scrape that flushed it.

Because a shadow evaluation covers a group of rows, the shadow's
``modelrollout_inference_seconds`` observations are the time of such a group: an upper
bound of what one request costs it, so a latency threshold never passes a slow candidate
because it was measured in shadow.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.features import FeatureBatch
from service.metric_names import NO_VERSION, EvaluationPath, Source
from service.metrics import ServiceMetrics
from service.models import LoadedModel
from service.rules import RuleEngine

log = logging.getLogger(__name__)


def reference(baseline: str, served_top1: str, shadow_top1: str) -> str:
    """The category a comparison is counted under: the *reference* answer, what the
    known-good side said (stable, or rules), never the candidate's.

    In shadow the candidate is the shadow, so the reference is the served answer; in canary
    the candidate serves its users with stable in its shadow, so the reference is the
    shadow's answer. Labelled by the served answer instead, a candidate that sends every
    Dining transaction to Shopping would, in canary, count its disagreements under
    Shopping, and Dining would look perfect (issue 12, point 4).

    >>> reference("stable", "Dining", "Shopping"), reference("candidate", "Shopping", "Dining")
    ('Dining', 'Dining')
    """
    return shadow_top1 if baseline == Source.CANDIDATE.value else served_top1


Evaluate = Callable[[Source, LoadedModel, FeatureBatch], npt.NDArray[np.float64] | None]
"""``(role, model, features) -> probabilities``, or None when the model raised (counted)."""


@dataclass(frozen=True, slots=True)
class ShadowRows:
    """The rows of one request (or coalesced group) that one shadow model must see."""

    role: Source
    model: LoadedModel
    features: FeatureBatch  # one row per transaction
    baselines: Sequence[str]  # who served each row (a Source value)
    baseline_versions: Sequence[str]  # the version that served it (NO_VERSION: rules)
    served_top1: Sequence[str]  # the label returned first
    rules_top1: Sequence[str | None]  # the rules' top-1 when already known, else None
    merchants: Sequence[str]
    memos: Sequence[str]
    amounts: Sequence[float]
    min_confidence: float

    def __len__(self) -> int:
        return len(self.baselines)


class ShadowQueue:
    """Pending shadow rows; thread-safe (large batches are answered on worker threads)."""

    def __init__(
        self, evaluate: Evaluate, rules: RuleEngine, metrics: ServiceMetrics, *, batch_rows: int
    ) -> None:
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.batch_rows = batch_rows
        self._evaluate = evaluate
        self._rules = rules
        self._metrics = metrics
        self._lock = threading.Lock()
        self._pending: list[ShadowRows] = []
        self._rows = 0
        self._scheduled = False  # a flush is queued on the event loop
        self.evaluations = 0
        """Model evaluations made by flushes (for tests and the benchmark)."""

    @property
    def pending_rows(self) -> int:
        return self._rows

    def add(self, rows: ShadowRows) -> None:
        """Queue ``rows``; evaluate everything queued once ``batch_rows`` rows wait: on the
        event loop in its next turn (after the answers being sent are written), on any
        other thread at once."""
        with self._lock:
            self._pending.append(rows)
            self._rows += len(rows)
            full = self._rows >= self.batch_rows
        if not full:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> int:
        """Evaluate and count every queued row now; how many rows were compared."""
        with self._lock:
            pending, self._pending, self._rows = self._pending, [], 0
        if not pending:
            return 0
        groups: dict[tuple[Source, int], list[ShadowRows]] = {}
        for chunk in pending:
            groups.setdefault((chunk.role, id(chunk.model)), []).append(chunk)
        compared = 0
        for (role, _), chunks in groups.items():
            try:
                compared += self._compare(role, chunks)
            except Exception:  # a shadow never fails a request or a scrape
                rows = sum(len(c) for c in chunks)
                log.exception("shadow comparison failed; %d rows of %s dropped", rows, role.value)
        return compared

    def _compare(self, role: Source, chunks: list[ShadowRows]) -> int:
        model = chunks[0].model
        x = FeatureBatch.concat([c.features for c in chunks])
        self.evaluations += 1
        proba = self._evaluate(role, model, x)
        if proba is None:
            return 0
        best_index = proba.argmax(axis=1)
        best_p = proba[np.arange(len(best_index)), best_index].tolist()
        best = best_index.tolist()
        classes = model.classes
        version = model.version
        comparisons: Counter[tuple[str, str, str, str]] = Counter()
        rules_seconds = 0.0
        i = 0
        for chunk in chunks:
            for j in range(len(chunk)):
                if best_p[i] >= chunk.min_confidence:
                    shadow_top1 = classes[best[i]]
                else:  # not confident: the user would have seen the rules' answer
                    known = chunk.rules_top1[j]
                    if known is None:
                        started = time.perf_counter()
                        known = self._rules.suggest(
                            chunk.merchants[j], chunk.memos[j], float(chunk.amounts[j]), 1
                        ).top
                        rules_seconds += time.perf_counter() - started
                    shadow_top1 = known
                top1 = chunk.served_top1[j]
                agree = "true" if shadow_top1 == top1 else "false"
                baseline = chunk.baselines[j]
                category = reference(baseline, top1, shadow_top1)
                comparisons[(baseline, chunk.baseline_versions[j], category, agree)] += 1
                i += 1
        m = self._metrics
        if rules_seconds:
            m.inference_seconds.labels(
                Source.RULES.value, NO_VERSION, EvaluationPath.SHADOW.value
            ).observe(rules_seconds)
        for (baseline, baseline_version, category, agree), count in comparisons.items():
            m.shadow_comparisons.labels(baseline, baseline_version, version, category, agree).inc(
                count
            )
        return i
