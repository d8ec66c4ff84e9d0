"""Answering a batch of transactions: route, evaluate, fall back, compare, count.

For each transaction the :class:`~service.routing.Router` of the current state says who
serves and which model runs in its shadow. Each model is then evaluated once for all rows
that need it (served or shadowed), rules only for the rows that need them; a shadow model
that serves none of the rows is evaluated later instead, off the request path, by the
shadow's worker within its budget (:mod:`service.shadow`; in a process of its own by
default, :mod:`service.shadow_process`). Then, per row:

- a model that raised serves nobody: its rows are answered by rules (fallback
  ``model_error``, and ``modelrollout_model_errors_total``);
- a model whose top-1 confidence is below ``min_confidence`` hands the row to rules
  (fallback ``low_confidence``); the model's other candidates below the threshold are
  dropped;
- the shadow's answer is what the user would have seen had the shadow served (its top-1,
  or the rules' top-1 when it is not confident enough); it is compared with the served
  top-1 and counted in ``modelrollout_shadow_comparisons_total``, never returned. The
  comparison's category is the *reference* answer (:func:`service.shadow.reference`):
  what stable or rules said, whichever of the two answers that is.

Every answer carries an event id (:mod:`service.events`) for feedback.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.events import EventCodec
from service.faults import Fault
from service.features import FeatureBatch, extract
from service.metric_names import NO_VERSION, EvaluationPath, FallbackReason, Source
from service.metrics import ServiceMetrics
from service.models import LoadedModel
from service.routing import Route
from service.rules import RuleEngine, RulesAnswer
from service.shadow import (
    DEFAULT_CPU_SHARE,
    DEFAULT_MAX_ROWS,
    ShadowQueue,
    ShadowRows,
    checked_proba,
    reference,
)
from service.shadow_process import EvaluatorSpec, ShadowProcess
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
    mccs: Sequence[str | None] = ()
    """Each row's ISO 18245 merchant category code or None; empty: no row carries one."""

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
        faults: Mapping[str, Fault] | None = None,
        shadow_batch_rows: int = 128,
        shadow_cpu_share: float = DEFAULT_CPU_SHARE,
        shadow_max_rows: int = DEFAULT_MAX_ROWS,
        shadow_idle_priority: bool = True,
        shadow_process: bool = False,
        compile_cache: Path | None = None,
        published_trees: bool = True,
        predict_threads: int = 1,
    ) -> None:
        self.rules = rules
        self.metrics = metrics
        self.events = events
        # Rollback drills (MODELROLLOUT_FAULTS): a version made slow or wrong on purpose.
        self.faults = dict(faults or {})
        self.shadow = ShadowQueue(
            partial(self._evaluate, path=EvaluationPath.SHADOW),
            rules,
            metrics,
            batch_rows=shadow_batch_rows,
            cpu_share=shadow_cpu_share,
            max_rows=shadow_max_rows,
            idle_priority=shadow_idle_priority,
            process=ShadowProcess(
                EvaluatorSpec(
                    rules=rules,
                    faults=self.faults,
                    compile_cache=compile_cache,
                    published_trees=published_trees,
                    num_threads=predict_threads,
                    idle_priority=shadow_idle_priority,
                )
            )
            if shadow_process
            else None,
        )

    def suggest(self, state: ServingState, batch: Batch) -> list[Answer]:
        """Answers for ``batch``, in input order, under one serving state."""
        n = len(batch)
        router = state.router
        routes: list[Route] = [
            router.route(user, tid) for user, tid in zip(batch.user_ids, batch.ids, strict=True)
        ]
        config = state.config
        top_k = config.top_k
        found = self._run_models(state, batch, routes, top_k)
        runs, failed, deferred = found.runs, found.failed, found.deferred

        min_conf = config.min_confidence
        rules_cache: dict[int, RulesAnswer] = {}
        rules_seconds = 0.0

        def rules_for(row: int) -> RulesAnswer:
            nonlocal rules_seconds
            answer = rules_cache.get(row)
            if answer is None:
                started = time.perf_counter()
                answer = self.rules.suggest(
                    batch.merchants[row],
                    batch.memos[row],
                    float(batch.amounts[row]),
                    top_k,
                    batch.mccs[row] if batch.mccs else None,
                )
                rules_seconds += time.perf_counter() - started
                rules_cache[row] = answer
            return answer

        served_counts: Counter[tuple[str, str]] = Counter()
        fallback_counts: Counter[str] = Counter()
        comparisons: Counter[tuple[str, str, str, str, str]] = Counter()
        # Per deferred shadow role: (row, who served, its version, served top-1, rules' top-1
        # if known).
        later: dict[Source, list[tuple[int, str, str, str, str | None]]] = {}
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
            if shadow is not None and shadow in deferred:
                known = rules_cache[row].top if row in rules_cache else None
                later.setdefault(shadow, []).append((row, serve.value, version, top1, known))
            elif shadow is not None and shadow not in failed:
                srun = runs[shadow]
                i = srun.position[row]
                best = srun.top[i][0]
                shadow_top1 = srun.model.classes[best] if srun.top_p[i][0] >= min_conf else None
                if shadow_top1 is None:
                    shadow_top1 = rules_for(row).top
                agree = "true" if shadow_top1 == top1 else "false"
                category = reference(serve.value, top1, shadow_top1)
                comparisons[(serve.value, version, srun.model.version, category, agree)] += 1

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
            m.inference_seconds.labels(
                Source.RULES.value, NO_VERSION, EvaluationPath.SERVED.value
            ).observe(rules_seconds)
        for (served_by, ver), count in served_counts.items():
            m.predictions.labels(served_by, ver).inc(count)
        for reason, count in fallback_counts.items():
            m.fallbacks.labels(reason).inc(count)
        for labels, count in comparisons.items():
            m.shadow_comparisons.labels(*labels).inc(count)
        for role, items in later.items():
            rows = [item[0] for item in items]
            features = found.features
            assert features is not None  # deferred rows are among the featurised ones
            self.shadow.add(
                ShadowRows(
                    role=role,
                    model=state.models[role],
                    features=features
                    if rows == found.needed
                    else features.take([found.feature_row[r] for r in rows]),
                    baselines=[item[1] for item in items],
                    baseline_versions=[item[2] for item in items],
                    served_top1=[item[3] for item in items],
                    rules_top1=[item[4] for item in items],
                    merchants=[batch.merchants[r] for r in rows],
                    memos=[batch.memos[r] for r in rows],
                    amounts=[batch.amounts[r] for r in rows],
                    min_confidence=min_conf,
                    mccs=[batch.mccs[r] for r in rows] if batch.mccs else (),
                )
            )
        return answers

    def _evaluate(
        self,
        role: Source,
        model: LoadedModel,
        x: FeatureBatch,
        path: EvaluationPath = EvaluationPath.SERVED,
    ) -> npt.NDArray[np.float64] | None:
        """The model's probabilities for ``x``, or None if it raised or answered nonsense
        (counted in ``model_errors``); the time is observed either way, under ``path``
        (``served``: some of the rows are answered with it; ``shadow``: none are)."""
        started = time.perf_counter()
        try:
            proba = checked_proba(model, x, self.faults)
        except Exception:
            self.metrics.model_errors.labels(role.value, model.version).inc()
            return None
        finally:
            self.metrics.inference_seconds.labels(role.value, model.version, path.value).observe(
                time.perf_counter() - started
            )
        return proba

    def _run_models(
        self, state: ServingState, batch: Batch, routes: Sequence[Route], top_k: int
    ) -> _Runs:
        """Evaluate each model once over the rows it serves or shadows now; note those that
        raised, and the shadow roles whose rows go to the :class:`ShadowQueue` instead (every
        model that serves none of the rows: nobody waits for a pure shadow)."""
        rows_of: dict[Source, list[int]] = {}
        shadow_rows_of: dict[Source, list[int]] = {}
        for row, route in enumerate(routes):
            if route.serve is not Source.RULES:
                rows_of.setdefault(route.serve, []).append(row)
            if route.shadow is not None:
                shadow_rows_of.setdefault(route.shadow, []).append(row)
        out = _Runs()
        for role, shadowed in shadow_rows_of.items():
            if role in rows_of:  # evaluated anyway: a few more rows cost little
                rows_of[role] = sorted(set(rows_of[role]).union(shadowed))
            else:
                out.deferred.add(role)
        featurised = list(rows_of.values()) + [shadow_rows_of[role] for role in out.deferred]
        if not featurised:
            return out
        if len(featurised) > 1:
            needed: Sequence[int] = sorted(set().union(*featurised))
        else:
            needed = featurised[0]
        features = _features(batch, needed)
        out.features = features
        out.needed = needed
        out.feature_row = {row: i for i, row in enumerate(needed)}
        for role in MODEL_ROLES:
            rows = rows_of.get(role)
            if not rows:
                continue
            model = state.models[role]
            x = features if rows == needed else features.take([out.feature_row[r] for r in rows])
            proba = self._evaluate(role, model, x)  # rows served here: path "served"
            if proba is None:
                out.failed.add(role)
                continue
            top = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
            top_p = np.take_along_axis(proba, top, axis=1)
            position = {row: i for i, row in enumerate(rows)} if len(rows) > 1 else {rows[0]: 0}
            out.runs[role] = _ModelRun(model, position, top.tolist(), top_p.tolist())
        return out


@dataclass(slots=True)
class _Runs:
    """What :meth:`Suggester._run_models` found for one batch."""

    runs: dict[Source, _ModelRun] = field(default_factory=dict)
    failed: set[Source] = field(default_factory=set)
    deferred: set[Source] = field(default_factory=set)  # shadow roles left to the queue
    features: FeatureBatch | None = None
    feature_row: dict[int, int] = field(default_factory=dict)  # batch row -> features row
    needed: Sequence[int] = ()  # the batch rows featurised, in features' order


def _features(batch: Batch, rows: Sequence[int]) -> FeatureBatch:
    """The features of the given rows of the batch, in that order."""
    mccs = batch.mccs
    if len(rows) == len(batch):
        return extract(batch.merchants, batch.memos, batch.amounts, mccs)
    return extract(
        [batch.merchants[r] for r in rows],
        [batch.memos[r] for r in rows],
        [batch.amounts[r] for r in rows],
        [mccs[r] for r in rows] if mccs else None,
    )
