"""Running one analysis against Prometheus (async httpx).

Prometheus unreachable, a timeout, an HTTP error, a query error make the checks of that
query short of evidence, never FAIL (no data is not evidence of harm; what to do after
``inconclusiveLimit`` is the user's ``inconclusivePolicy``). Each query stands alone: the
built-in figures come from one query and each custom check from its own, and a breach
measured by one still fails the analysis when another could not be answered (harm wins
over missing evidence, :func:`controller.analysis.judge`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from controller.analysis import judge
from controller.model import (
    AnalysisResult,
    AnalysisSpec,
    Figures,
    format_duration,
    parse_duration,
)
from controller.promql import Scope, analysis_query, custom_query, first_value, parse_analysis


class PrometheusError(Exception):
    """Prometheus could not answer a query."""


class Prometheus:
    """A small instant-query client; one shared connection pool for every rollout."""

    def __init__(self, client: httpx.AsyncClient, *, timeout: float = 5.0) -> None:
        self._client = client
        self._timeout = timeout

    async def query(self, base_url: str, promql: str, at: datetime) -> dict[str, Any]:
        """The ``data`` of ``/api/v1/query`` (POST form: long queries fit)."""
        url = base_url.rstrip("/") + "/api/v1/query"
        try:
            resp = await self._client.post(
                url,
                data={"query": promql, "time": f"{at.timestamp():.3f}"},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise PrometheusError(f"Prometheus at {base_url} unreachable: {exc!r}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or body.get("status") != "success":
            detail = body.get("error") or resp.text[:200]
            raise PrometheusError(f"Prometheus query failed ({resp.status_code}): {detail}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError("Prometheus answer has no data")
        return data


def analysis_window(analysis: AnalysisSpec, candidate_since: datetime | None, now: datetime) -> str:
    """The query range: the spec's window, never reaching back before the candidate.

    A new candidate's first analyses thus read only its own traffic, never the previous
    candidate's, and are never shorter than one interval.
    """
    window = parse_duration(analysis.window)
    if candidate_since is not None:
        window = min(window, max(now - candidate_since, parse_duration(analysis.interval)))
    return format_duration(timedelta(seconds=max(1, round(window.total_seconds()))))


async def run_analysis(
    prometheus: Prometheus,
    base_url: str | None,
    analysis: AnalysisSpec,
    *,
    candidate: str,
    stable: str | None,
    candidate_since: datetime | None,
    now: datetime,
    target: str | None = None,
) -> AnalysisResult:
    """One analysis of ``candidate`` on ``target``: one combined query plus one per custom
    check, each judged on what it answered."""
    window = analysis_window(analysis, candidate_since, now)
    if target is None:
        target = analysis.target
    th = analysis.thresholds
    scope = Scope(
        candidate=candidate,
        stable=stable,
        window=window,
        selector=analysis.label_selector,
        target=target,
        quantile=th.latency_quantile,
    )
    min_cat = th.min_category_samples
    if base_url is None:
        outcome, reasons = judge(
            Figures(),
            analysis,
            unavailable="no Prometheus URL (spec.analysis.prometheusURL or --prometheus-url)",
        )
        return AnalysisResult(
            time=now, candidate=candidate, outcome=outcome, reasons=reasons, window=window
        )
    unavailable: str | None = None
    try:
        data = await prometheus.query(base_url, analysis_query(scope), now)
        figures = parse_analysis(data, min_category_samples=min_cat, quantile=th.latency_quantile)
    except PrometheusError as exc:
        unavailable = str(exc)
        figures = Figures()
    custom: dict[str, float | None] = {}
    custom_unavailable: dict[str, str] = {}
    for check in analysis.custom_checks:
        try:
            answer = await prometheus.query(base_url, custom_query(check.query, scope), now)
        except PrometheusError as exc:
            custom_unavailable[check.name] = str(exc)
            continue
        custom[check.name] = first_value(answer)
    figures = figures.model_copy(
        update={"custom": {k: v for k, v in custom.items() if v is not None}}
    )
    outcome, reasons = judge(
        figures,
        analysis,
        unavailable=unavailable,
        custom=custom,
        custom_unavailable=custom_unavailable,
    )
    return AnalysisResult(
        time=now,
        candidate=candidate,
        outcome=outcome,
        reasons=reasons,
        figures=figures,
        window=window,
    )
