"""Judging one analysis: figures + thresholds -> pass, fail or inconclusive, with reasons.

Rules, in this order of strength:

- **fail** when any measured figure breaks its threshold (agreement, worst category
  agreement, candidate latency at ``latencyQuantile`` absolute or relative to stable's,
  candidate error rate, feedback acceptance relative to stable, a custom check out of
  range). Evidence of harm wins over missing evidence: a query that failed makes only its
  own checks short, never hides a breach that another query measured.
- **inconclusive** when nothing failed but the evidence is short: Prometheus unreachable,
  fewer comparisons than ``minSamples``, or a figure that a threshold asks for has no data.
  An inconclusive analysis never advances a rollout (DESIGN.md).

The error rate divides by at least ``minSamples`` evaluations: 1 error in 50 evaluations
is 1/100 = 0.01, not above the default 0.01 (no rollback on one unlucky call); 2 in 50
is 0.02 and fails at once.

The relative latency bound compares evaluations that answered users (the ``served``
path) of candidate and stable, so it needs a stable model and at least
``minLatencySamples`` served candidate evaluations in the window (canary); without them it
is not judged (the absolute bound, when set, still is, over every evaluation). It is a
test, not a reading: a canary's p95 from a few dozen evaluations is its slowest one or
two, and on a busy node that rolled a good model back (p95 8.4 ms against stable's 4.2 ms
from 2,000). The bound ``L = maxLatencyRatio x stable's quantile + allowance`` says at
most a share ``1 - q`` of the candidate's evaluations may be slower than ``L``; it fails
when the candidate's quantile is above ``L`` *and* the count of its served evaluations
certainly slower than ``L`` (above the first histogram bucket bound at or over ``L``) is
too many for that share at :data:`LATENCY_SIGNIFICANCE` (a one-sided binomial test, the
textbook test of a quantile). E.g. at p95, 5 of 20 slower (P = 0.0026) fails and 2 of 20
(P = 0.26) does not; 8 of 50 (P = 0.0032) fails.
- **pass** otherwise.

Feedback is judged only when the candidate has at least ``minFeedbackSamples`` answers
with feedback and stable has some ("only when feedback exists"); categories only with at
least ``minCategorySamples`` comparisons, or with fewer when their agreement is clearly
below the bound already (its 3-sigma Wilson upper bound is: e.g. none agreeing in 5).

>>> from controller.model import AnalysisSpec, Figures
>>> judge(Figures(samples=500, agreement=0.95, evaluations=500, errors=0), AnalysisSpec())
(<AnalysisOutcome.PASS: 'Pass'>, [])
>>> judge(Figures(samples=500, agreement=0.62, evaluations=500, errors=0), AnalysisSpec())
(<AnalysisOutcome.FAIL: 'Fail'>, ['agreement 0.620 < 0.900'])
>>> judge(Figures(samples=12, agreement=0.5, evaluations=12, errors=0), AnalysisSpec())
(<AnalysisOutcome.INCONCLUSIVE: 'Inconclusive'>, ['12 comparisons < minSamples 100'])

Pure.
"""

from __future__ import annotations

import math

from controller.model import AnalysisOutcome, AnalysisSpec, Figures

LATENCY_SIGNIFICANCE = 0.01
"""How unlikely the count of slow evaluations must be, were the candidate within its
relative bound, before the bound counts as breached."""


def binomial_upper_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p); exact, summed in log space (no scipy here).

    >>> round(binomial_upper_tail(20, 5, 0.05), 4)
    0.0026
    >>> binomial_upper_tail(20, 0, 0.05)
    1.0
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    total = 0.0
    for j in range(k, n + 1):
        term = math.exp(
            log_n - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
        )
        total += term
        if j > n * p and term <= total * 1e-12:  # past the mode, the rest is negligible
            break
    return min(total, 1.0)


def slower_than(buckets: tuple[tuple[float, float], ...], limit: float) -> float:
    """Evaluations certainly slower than ``limit``: above the first bucket bound >= limit.

    ``buckets`` are cumulative ``(upper bound, count)`` pairs, ascending, ``inf`` last.

    >>> slower_than(((0.005, 80.0), (0.01, 95.0), (math.inf, 100.0)), 0.0083)
    5.0
    """
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if bound >= limit:
            return max(total - count, 0.0)
    return 0.0


def judge(
    figures: Figures,
    analysis: AnalysisSpec,
    *,
    unavailable: str | None = None,
    custom: dict[str, float | None] | None = None,
    custom_unavailable: dict[str, str] | None = None,
) -> tuple[AnalysisOutcome, list[str]]:
    """The outcome and its reasons (empty on pass).

    ``unavailable``: why the main query (every built-in figure) has no answer;
    ``custom_unavailable``: why a custom check's query has none, by check name. Each makes
    only its own checks short of evidence: a breach measured by any other check still
    fails the analysis (harm wins over missing evidence).
    """
    failed: list[str] = []
    short: list[str] = []
    if unavailable is not None:
        short.append(unavailable)
    else:
        _judge_figures(figures, analysis, failed, short)

    values = custom or {}
    broken = custom_unavailable or {}
    for check in analysis.custom_checks:
        value = values.get(check.name)
        if check.name in broken:
            short.append(f"custom check {check.name!r}: {broken[check.name]}")
        elif value is None:
            short.append(f"custom check {check.name!r}: no data")
        elif check.min is not None and value < check.min:
            failed.append(f"custom check {check.name!r} {value:g} < min {check.min:g}")
        elif check.max is not None and value > check.max:
            failed.append(f"custom check {check.name!r} {value:g} > max {check.max:g}")

    if failed:
        return AnalysisOutcome.FAIL, failed
    if short:
        return AnalysisOutcome.INCONCLUSIVE, short
    return AnalysisOutcome.PASS, []


def _judge_figures(
    figures: Figures, analysis: AnalysisSpec, failed: list[str], short: list[str]
) -> None:
    """The built-in checks: breaches into ``failed``, missing evidence into ``short``."""
    th = analysis.thresholds
    samples = figures.samples or 0.0
    enough = samples >= analysis.min_samples
    if not enough:
        short.append(f"{samples:.0f} comparisons < minSamples {analysis.min_samples}")

    if enough and th.min_agreement is not None:
        if figures.agreement is None:
            short.append("no agreement data")
        elif figures.agreement < th.min_agreement:
            failed.append(f"agreement {figures.agreement:.3f} < {th.min_agreement:.3f}")

    if th.min_category_agreement is not None:
        worst = figures.worst_category_agreement
        if enough and worst is not None and worst < th.min_category_agreement:
            failed.append(
                f"category {figures.worst_category!r} agreement {worst:.3f} "
                f"< {th.min_category_agreement:.3f}"
            )
        clear = figures.clear_category_bound
        if clear is not None and clear < th.min_category_agreement:
            # Few comparisons, but already clear harm: judged whatever minSamples says.
            failed.append(
                f"category {figures.clear_category!r} agreement "
                f"{figures.clear_category_agreement or 0.0:.3f} in "
                f"{figures.clear_category_samples or 0.0:.0f} comparisons (at most {clear:.3f}) "
                f"< {th.min_category_agreement:.3f}"
            )

    q = figures.latency_seconds
    name = f"p{th.latency_quantile * 100:g} latency"
    bound = th.latency_bound
    if bound is not None:
        if q is None:
            short.append("no latency data for the candidate")
        elif q > bound:
            failed.append(f"{name} {q:.4f}s > {bound:.4f}s")
    served_q = figures.served_latency_seconds
    stable_q = figures.stable_latency_seconds
    if (
        th.max_latency_ratio is not None
        and served_q is not None
        and stable_q is not None
        and (figures.served_evaluations or 0.0) >= th.min_latency_samples
    ):
        limit = th.max_latency_ratio * stable_q + th.latency_allowance_seconds
        buckets = figures.served_latency_buckets
        if served_q > limit and buckets:
            served_n = round(buckets[-1][1])
            slow = round(slower_than(buckets, limit))
            chance = binomial_upper_tail(served_n, slow, 1.0 - th.latency_quantile)
            if chance < LATENCY_SIGNIFICANCE:
                failed.append(
                    f"{name} {served_q:.4f}s serving > {th.max_latency_ratio:g}x stable's "
                    f"{stable_q:.4f}s + {th.latency_allowance_seconds:g}s ({slow} of {served_n} "
                    f"served evaluations slower, P={chance:.2g})"
                )

    if th.max_error_rate is not None:
        evaluations = figures.evaluations
        errors = figures.errors
        if figures.error_rate is None and evaluations is None:
            short.append("no evaluations of the candidate")
        else:
            if errors is None:  # figures from before errors were kept: the rate is all
                errors = (figures.error_rate or 0.0) * (evaluations or 0.0)
            # Fewer evaluations than minSamples count as minSamples: one error in 50
            # is not evidence of a 2% error rate, but 5 errors in 50 are already 5%
            # of the least sample judged.
            denominator = max(evaluations or 0.0, errors, float(analysis.min_samples))
            rate = errors / denominator
            if rate > th.max_error_rate:
                failed.append(
                    f"error rate {rate:.4f} > {th.max_error_rate:.4f} "
                    f"({errors:.0f} errors in {evaluations or 0.0:.0f} evaluations)"
                )

    if th.min_feedback_acceptance_ratio is not None:
        ratio = figures.feedback_acceptance_ratio
        n = figures.feedback_samples or 0.0
        if (
            ratio is not None
            and n >= th.min_feedback_samples
            and ratio < th.min_feedback_acceptance_ratio
        ):
            failed.append(
                f"feedback acceptance {ratio:.3f}x stable < {th.min_feedback_acceptance_ratio:.3f}x"
            )
