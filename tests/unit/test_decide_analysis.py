"""Analysis outcomes as a table: figures + thresholds -> pass, fail, inconclusive."""

from __future__ import annotations

from typing import Any

import pytest

from controller.analysis import judge
from controller.model import AnalysisOutcome, AnalysisSpec, Figures

pytestmark = pytest.mark.unit

P, F, INC = AnalysisOutcome.PASS, AnalysisOutcome.FAIL, AnalysisOutcome.INCONCLUSIVE
GOOD: dict[str, Any] = {"samples": 500, "agreement": 0.95, "error_rate": 0.0}


def spec(**thresholds: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate({"thresholds": thresholds})


@pytest.mark.parametrize(
    ("figures", "analysis", "outcome", "reason"),
    [
        pytest.param(GOOD, spec(), P, None, id="good-passes"),
        pytest.param({**GOOD, "agreement": 0.5}, spec(), F, "agreement 0.500", id="agreement"),
        pytest.param({**GOOD, "samples": 99}, spec(), INC, "99 comparisons", id="few-samples"),
        pytest.param({"samples": 0}, spec(), INC, "0 comparisons", id="no-traffic"),
        pytest.param(
            {**GOOD, "samples": 10, "error_rate": 0.5},
            spec(),
            F,
            "error rate",
            id="errors-fail-even-with-few-samples",
        ),
        pytest.param(
            {**GOOD, "worst_category": "rent", "worst_category_agreement": 0.6},
            spec(minCategoryAgreement=0.8),
            F,
            "category 'rent'",
            id="worst-category",
        ),
        pytest.param(
            {**GOOD, "worst_category": "rent", "worst_category_agreement": 0.6},
            spec(),
            P,
            None,
            id="category-not-judged-unless-asked",
        ),
        pytest.param(
            {**GOOD, "latency_p95_seconds": 0.05},
            spec(maxLatencyP95Seconds=0.01),
            F,
            "p95 latency",
            id="latency",
        ),
        pytest.param(
            GOOD, spec(maxLatencyP95Seconds=0.01), INC, "no latency", id="latency-unknown"
        ),
        pytest.param({**GOOD, "error_rate": None}, spec(), INC, "no evaluations", id="no-evals"),
        pytest.param(
            {**GOOD, "feedback_samples": 50, "feedback_acceptance_ratio": 0.7},
            spec(minFeedbackAcceptanceRatio=0.9),
            F,
            "feedback",
            id="feedback-worse",
        ),
        pytest.param(
            {**GOOD, "feedback_samples": 5, "feedback_acceptance_ratio": 0.1},
            spec(minFeedbackAcceptanceRatio=0.9),
            P,
            None,
            id="feedback-too-little-skipped",
        ),
        pytest.param(
            {**GOOD, "feedback_samples": None, "feedback_acceptance_ratio": None},
            spec(minFeedbackAcceptanceRatio=0.9),
            P,
            None,
            id="feedback-absent-skipped",
        ),
        pytest.param(
            {**GOOD, "samples": 3, "agreement": 0.1},
            spec(),
            INC,
            "3 comparisons",
            id="agreement-not-judged-on-few-samples",
        ),
    ],
)
def test_outcome_table(
    figures: dict[str, Any], analysis: AnalysisSpec, outcome: AnalysisOutcome, reason: str | None
) -> None:
    got, reasons = judge(Figures.model_validate(figures), analysis)
    assert got == outcome
    if reason is None:
        assert reasons == []
    else:
        assert any(reason in r for r in reasons), reasons


def test_unreachable_prometheus_is_inconclusive() -> None:
    got, reasons = judge(Figures(), AnalysisSpec(), unavailable="Prometheus unreachable")
    assert (got, reasons) == (INC, ["Prometheus unreachable"])


@pytest.mark.parametrize(("value", "outcome"), [(0.5, P), (0.05, F), (2.0, F), (None, INC)])
def test_custom_checks(value: float | None, outcome: AnalysisOutcome) -> None:
    analysis = AnalysisSpec.model_validate(
        {"customChecks": [{"name": "ratio", "query": "x", "min": 0.1, "max": 1.0}]}
    )
    got, _ = judge(Figures.model_validate(GOOD), analysis, custom={"ratio": value})
    assert got == outcome


def test_status_shows_figures_rounded_and_judging_uses_them_unrounded() -> None:
    figures = Figures(samples=2020.0, agreement=0.7499996, latency_p95_seconds=0.01234567)
    shown = figures.dump()
    assert shown["agreement"] == 0.75  # what kubectl get mro shows
    assert shown["latencyP95Seconds"] == 0.012346
    assert shown["samples"] == 2020.0
    outcome, reasons = judge(
        figures, AnalysisSpec.model_validate({"thresholds": {"minAgreement": 0.75}})
    )
    assert outcome is AnalysisOutcome.FAIL  # 0.7499996 < 0.75, although shown as 0.75
    assert any("agreement" in r for r in reasons)
