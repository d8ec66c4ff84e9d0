"""Answering a batch of transactions: route, evaluate, fall back, compare, count.

For each transaction the :class:`~service.routing.Router` of the current state says who
serves and which model runs in its shadow. Each model is then evaluated once for all rows
that need it (served or shadowed), rules only for the rows that need them. Then, per row:

- a model that raised serves nobody: its rows are answered by rules (fallback
  ``model_error``, and ``modelrollout_model_errors_total``);
- a model whose top-1 confidence is below ``min_confidence`` hands the row to rules
  (fallback ``low_confidence``); the model's other candidates below the threshold are
  dropped;
- the shadow's answer is what the user would have seen had the shadow served (its top-1,
  or the rules' top-1 when it is not confident enough); it is compared with the served
  top-1 and counted in ``modelrollout_shadow_comparisons_total``, never returned.

Every answer carries an event id (:mod:`service.events`) for feedback.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.events import EventCodec
from service.features import extract_batch, extract_one
from service.metric_names import NO_VERSION, FallbackReason, Source
from service.metrics import ServiceMetrics
from service.models import LoadedModel
from service.routing import Route
from service.rules import RuleEngine, RulesAnswer
from service.state import MODEL_ROLES, ServingState

Answer = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Batch:
    """Transactions as parallel columns (what the API hands over after validation)."""

    ids: Sequence[str]
    merchants: Sequence[str]
    memos: Sequence[str]
    amounts: Sequence[float]
    user_ids: Sequence[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(slots=True)
class _ModelRun:
    """One model's answers for the rows that needed it."""

    model: LoadedModel
    position: dict[int, int]  # row -> index into top and top_p
    top: list[list[int]]  # per row, the top-K class indices by descending probability
    top_p: list[list[float]]  # their probabilities (Python floats: no numpy per row)


class Suggester:
    """Stateless apart from its collaborators; one per app, shared by all requests."""

    def __init__(
        self,
        rules: RuleEngine,
        metrics: ServiceMetrics,
        events: EventCodec,
        *,
        fault_delays: Mapping[str, float] | None = None,
    ) -> None:
        self.rules = rules
        self.metrics = metrics
        self.events = events
        # Rollback drills (MODELROLLOUT_FAULT_DELAY): a version made slow on purpose.
        self.fault_delays = dict(fault_delays or {})

    def suggest(self, state: ServingState, batch: Batch) -> list[Answer]:
        """Answers for ``batch``, in input order, under one serving state."""
        n = len(batch)
        router = state.router
        routes: list[Route] = [
            router.route(user, tid) for user, tid in zip(batch.user_ids, batch.ids, strict=True)
        ]
        config = state.config
        top_k = config.top_k
        runs, failed = self._run_models(state, batch, routes, top_k)

        min_conf = config.min_confidence
        rules_cache: dict[int, RulesAnswer] = {}
        rules_seconds = 0.0

        def rules_for(row: int) -> RulesAnswer:
            nonlocal rules_seconds
            answer = rules_cache.get(row)
            if answer is None:
                started = time.perf_counter()
                answer = self.rules.suggest(
                    batch.merchants[row], batch.memos[row], float(batch.amounts[row]), top_k
                )
                rules_seconds += time.perf_counter() - started
                rules_cache[row] = answer
            return answer

        served_counts: Counter[tuple[str, str]] = Counter()
        fallback_counts: Counter[str] = Counter()
        comparisons: Counter[tuple[str, str, str, str]] = Counter()
        answers: list[Answer] = []
        events = self.events
        nonces = events.nonces(n)
        for row in range(n):
            route = routes[row]
            serve = route.serve
            fallback = route.fallback
            candidates: list[dict[str, Any]] | None = None
            version = NO_VERSION
            if serve is not Source.RULES:
                run = runs.get(serve)
                if run is None:  # the model raised
                    serve, fallback = Source.RULES, FallbackReason.MODEL_ERROR
                else:
                    i = run.position[row]
                    top_p = run.top_p[i]
                    if top_p[0] < min_conf:
                        serve, fallback = Source.RULES, FallbackReason.LOW_CONFIDENCE
                    else:
                        classes = run.model.classes
                        candidates = [
                            {"label": classes[j], "confidence": p}
                            for j, p in zip(run.top[i], top_p, strict=True)
                            if p >= min_conf
                        ]
                        version = run.model.version
            rule: str | None = None
            if candidates is None:
                rules_answer = rules_for(row)
                candidates = [
                    {"label": label, "confidence": conf} for label, conf in rules_answer.candidates
                ]
                rule = rules_answer.rule
            top1: str = candidates[0]["label"]

            shadow = route.shadow
            if shadow is not None and shadow not in failed:
                srun = runs[shadow]
                i = srun.position[row]
                best = srun.top[i][0]
                shadow_top1 = srun.model.classes[best] if srun.top_p[i][0] >= min_conf else None
                if shadow_top1 is None:
                    shadow_top1 = rules_for(row).top
                agree = "true" if shadow_top1 == top1 else "false"
                comparisons[(serve.value, srun.model.version, top1, agree)] += 1

            served_counts[(serve.value, version)] += 1
            if fallback is not None:
                fallback_counts[fallback.value] += 1
            answers.append(
                {
                    "id": batch.ids[row],
                    "candidates": candidates,
                    "served_by": serve.value,
                    "model_version": None if version == NO_VERSION else version,
                    "rule": rule,
                    "event_id": events.encode(serve, version, top1, nonces[row]),
                }
            )

        m = self.metrics
        if rules_cache:
            m.inference_seconds.labels(Source.RULES.value, NO_VERSION).observe(rules_seconds)
        for (served_by, ver), count in served_counts.items():
            m.predictions.labels(served_by, ver).inc(count)
        for reason, count in fallback_counts.items():
            m.fallbacks.labels(reason).inc(count)
        for labels, count in comparisons.items():
            m.shadow_comparisons.labels(*labels).inc(count)
        return answers

    def _run_models(
        self, state: ServingState, batch: Batch, routes: Sequence[Route], top_k: int
    ) -> tuple[dict[Source, _ModelRun], set[Source]]:
        """Evaluate each model once over the rows that need it; note those that raised."""
        rows_of: dict[Source, list[int]] = {}
        for row, route in enumerate(routes):
            if route.serve is not Source.RULES:
                rows_of.setdefault(route.serve, []).append(row)
            if route.shadow is not None:
                rows_of.setdefault(route.shadow, []).append(row)
        runs: dict[Source, _ModelRun] = {}
        failed: set[Source] = set()
        if not rows_of:
            return runs, failed
        union = sorted(set().union(*rows_of.values())) if len(rows_of) > 1 else None
        needed = union if union is not None else next(iter(rows_of.values()))
        features = _features(batch, needed)
        feature_row = {row: i for i, row in enumerate(needed)}
        for role in MODEL_ROLES:
            rows = rows_of.get(role)
            if not rows:
                continue
            model = state.models[role]
            started = time.perf_counter()
            try:
                x = features if rows == needed else features[[feature_row[r] for r in rows]]
                proba = model.predict_proba(x)
                delay = self.fault_delays.get(model.version)
                if delay:
                    time.sleep(delay)
                if proba.shape != (len(rows), len(model.classes)) or not np.isfinite(proba).all():
                    raise ValueError(f"unusable probabilities of shape {proba.shape}")
            except Exception:
                self.metrics.model_errors.labels(role.value, model.version).inc()
                failed.add(role)
                continue
            finally:
                self.metrics.inference_seconds.labels(role.value, model.version).observe(
                    time.perf_counter() - started
                )
            top = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
            top_p = np.take_along_axis(proba, top, axis=1)
            position = {row: i for i, row in enumerate(rows)} if len(rows) > 1 else {rows[0]: 0}
            runs[role] = _ModelRun(model, position, top.tolist(), top_p.tolist())
        return runs, failed


def _features(batch: Batch, rows: Sequence[int]) -> npt.NDArray[np.float64]:
    """The feature matrix of the given rows of the batch, in that order."""
    if len(rows) == 1:
        r = rows[0]
        return np.array(
            [extract_one(batch.merchants[r], batch.memos[r], batch.amounts[r])], dtype=np.float64
        )
    if len(rows) == len(batch):
        return extract_batch(batch.merchants, batch.memos, batch.amounts)
    return extract_batch(
        [batch.merchants[r] for r in rows],
        [batch.memos[r] for r in rows],
        [batch.amounts[r] for r in rows],
    )
