"""The PromQL builder: scoping by candidate and selector, one combined query, parsing."""

from __future__ import annotations

from typing import Any

import pytest

from controller.promql import (
    Scope,
    analysis_query,
    custom_query,
    figure_exprs,
    first_value,
    matchers,
    parse_analysis,
)

pytestmark = pytest.mark.unit

SCOPE = Scope(candidate="v2", stable="v1", window="60s", selector={"namespace": "prod"})


def test_every_figure_is_scoped_to_the_candidate_and_the_selector() -> None:
    for name, expr in figure_exprs(SCOPE).items():
        assert 'namespace="prod"' in expr, name
        assert '"v2"' in expr or 'baseline="candidate"' in expr, name
        assert "[60s]" in expr, name


@pytest.mark.parametrize(
    ("figure", "expected"),
    [
        (
            "samples",
            'sum((increase(modelrollout_shadow_comparisons_total{namespace="prod",'
            'shadow_version="v2"}[60s]) or increase(modelrollout_shadow_comparisons_total'
            '{baseline="candidate",namespace="prod"}[60s])))',
        ),
        (
            "latency_p95",
            "histogram_quantile(0.95, sum by (le) (rate(modelrollout_inference_"
            'seconds_bucket{model_version="v2",namespace="prod"}[60s])))',
        ),
        (
            "errors",
            'sum(increase(modelrollout_model_errors_total{model_version="v2",'
            'namespace="prod"}[60s]))',
        ),
    ],
)
def test_figure_expressions(figure: str, expected: str) -> None:
    assert figure_exprs(SCOPE)[figure] == expected


def test_agreement_keeps_categories_without_any_agreement() -> None:
    expr = figure_exprs(SCOPE)["category_agreement"]
    assert 'agree="true"' in expr
    assert "* 0" in expr  # disagreeing-only categories count as 0, not absent


def test_combined_query_labels_each_figure() -> None:
    query = analysis_query(SCOPE)
    for name in figure_exprs(SCOPE):
        assert "label_replace(" in query
        assert f'"figure", "{name}", "", ""' in query
    assert query.count(" or label_replace(") == len(figure_exprs(SCOPE)) - 1


def test_label_values_are_escaped_and_names_checked() -> None:
    assert matchers({"job": 'a"b\\c'}) == '{job="a\\"b\\\\c"}'
    with pytest.raises(ValueError, match="label name"):
        matchers({"bad-name": "x"})


def test_custom_query_placeholders() -> None:
    assert custom_query("f{v='{{stable}}'}[{{window}}]", SCOPE) == "f{v='v1'}[60s]"


def _sample(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000.0, value]}


def test_parse_reads_every_figure() -> None:
    data = {
        "resultType": "vector",
        "result": [
            _sample("500", figure="samples"),
            _sample("0.93", figure="agreement"),
            _sample("0.97", figure="category_agreement", category="coffee"),
            _sample("0.40", figure="category_agreement", category="rent"),
            _sample("0.10", figure="category_agreement", category="gym"),
            _sample("300", figure="category_samples", category="coffee"),
            _sample("50", figure="category_samples", category="rent"),
            _sample("3", figure="category_samples", category="gym"),
            _sample("0.004", figure="latency_p95"),
            _sample("1000", figure="evaluations"),
            _sample("5", figure="errors"),
            _sample("40", figure="feedback", served_by="candidate", outcome="accepted"),
            _sample("10", figure="feedback", served_by="candidate", outcome="rejected"),
            _sample("90", figure="feedback", served_by="stable", outcome="accepted"),
            _sample("10", figure="feedback", served_by="stable", outcome="rejected"),
        ],
    }
    f = parse_analysis(data, min_category_samples=20)
    assert f.samples == 500
    assert f.agreement == pytest.approx(0.93)
    assert (f.worst_category, f.worst_category_agreement) == ("rent", pytest.approx(0.40))
    assert f.latency_p95_seconds == pytest.approx(0.004)
    assert f.error_rate == pytest.approx(0.005)
    assert f.feedback_samples == 50
    assert f.feedback_acceptance_ratio == pytest.approx(0.8 / 0.9)


def test_parse_without_data_leaves_figures_unknown() -> None:
    f = parse_analysis({"resultType": "vector", "result": []}, min_category_samples=20)
    assert f.samples is None
    assert f.agreement is None
    assert f.error_rate is None
    assert f.feedback_samples is None


def test_parse_nan_is_unknown_and_inf_latency_is_the_last_bucket() -> None:
    data = {"result": [_sample("NaN", figure="agreement"), _sample("+Inf", figure="latency_p95")]}
    f = parse_analysis(data, min_category_samples=1)
    assert f.agreement is None
    assert f.latency_p95_seconds == 1.0


def test_first_value_of_scalar_and_vector() -> None:
    assert first_value({"resultType": "scalar", "result": [1.0, "0.5"]}) == 0.5
    assert first_value({"resultType": "vector", "result": [_sample("2")]}) == 2.0
    assert first_value({"resultType": "vector", "result": []}) is None
