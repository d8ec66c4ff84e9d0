"""Judging one analysis: figures + thresholds -> pass, fail or inconclusive, with reasons.

Rules, in this order of strength:

- **fail** when any measured figure breaks its threshold (agreement, worst category
  agreement, candidate p95 latency, candidate error rate, feedback acceptance relative to
  stable, a custom check out of range). Evidence of harm wins over missing evidence.
- **inconclusive** when nothing failed but the evidence is short: Prometheus unreachable,
  fewer comparisons than ``minSamples``, or a figure that a threshold asks for has no data.
  An inconclusive analysis never advances a rollout (DESIGN.md).
- **pass** otherwise.

Feedback is judged only when the candidate has at least ``minFeedbackSamples`` answers
with feedback and stable has some ("only when feedback exists"); categories only with at
least ``minCategorySamples`` comparisons.

>>> from controller.model import AnalysisSpec, Figures
>>> judge(Figures(samples=500, agreement=0.95, error_rate=0.0), AnalysisSpec())
(<AnalysisOutcome.PASS: 'Pass'>, [])
>>> judge(Figures(samples=500, agreement=0.62, error_rate=0.0), AnalysisSpec())
(<AnalysisOutcome.FAIL: 'Fail'>, ['agreement 0.620 < 0.900'])
>>> judge(Figures(samples=12, agreement=0.5, error_rate=0.0), AnalysisSpec())
(<AnalysisOutcome.INCONCLUSIVE: 'Inconclusive'>, ['12 comparisons < minSamples 100'])

Pure.
"""

from __future__ import annotations

from controller.model import AnalysisOutcome, AnalysisSpec, Figures


def judge(
    figures: Figures,
    analysis: AnalysisSpec,
    *,
    unavailable: str | None = None,
    custom: dict[str, float | None] | None = None,
) -> tuple[AnalysisOutcome, list[str]]:
    """The outcome and its reasons (empty on pass). ``unavailable``: why no data at all."""
    if unavailable is not None:
        return AnalysisOutcome.INCONCLUSIVE, [unavailable]
    th = analysis.thresholds
    failed: list[str] = []
    short: list[str] = []

    samples = figures.samples or 0.0
    enough = samples >= analysis.min_samples
    if not enough:
        short.append(f"{samples:.0f} comparisons < minSamples {analysis.min_samples}")

    if enough and th.min_agreement is not None:
        if figures.agreement is None:
            short.append("no agreement data")
        elif figures.agreement < th.min_agreement:
            failed.append(f"agreement {figures.agreement:.3f} < {th.min_agreement:.3f}")

    if enough and th.min_category_agreement is not None:
        worst = figures.worst_category_agreement
        if worst is not None and worst < th.min_category_agreement:
            failed.append(
                f"category {figures.worst_category!r} agreement {worst:.3f} "
                f"< {th.min_category_agreement:.3f}"
            )

    if th.max_latency_p95_seconds is not None:
        p95 = figures.latency_p95_seconds
        if p95 is None:
            short.append("no latency data for the candidate")
        elif p95 > th.max_latency_p95_seconds:
            failed.append(f"p95 latency {p95:.4f}s > {th.max_latency_p95_seconds:.4f}s")

    if th.max_error_rate is not None:
        rate = figures.error_rate
        if rate is None:
            short.append("no evaluations of the candidate")
        elif rate > th.max_error_rate:
            failed.append(f"error rate {rate:.4f} > {th.max_error_rate:.4f}")

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

    values = custom or {}
    for check in analysis.custom_checks:
        value = values.get(check.name)
        if value is None:
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
