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
    wilson_upper,
)

pytestmark = pytest.mark.unit

SCOPE = Scope(
    candidate="v2", stable="v1", window="60s", selector={"namespace": "prod"}, target="cards"
)


def test_every_figure_is_scoped_to_the_target_the_versions_and_the_selector() -> None:
    for name, expr in figure_exprs(SCOPE).items():
        assert 'namespace="prod"' in expr, name
        assert 'target="cards"' in expr, name
        assert "[60s]" in expr, name
        assert expr.count("{") == expr.count('target="cards"'), name  # every selector
    exprs = figure_exprs(SCOPE)
    for name in ("samples", "agreement", "category_agreement", "category_samples"):
        # as shadow of stable (or of rules), and as served canary with stable in shadow
        assert 'baseline_version=~"v1|none",namespace="prod",shadow_version="v2"' in exprs[name]
        assert (
            'baseline="candidate",baseline_version="v2",namespace="prod",shadow_version="v1"'
            in exprs[name]
        )
    for name in ("latency", "evaluations", "errors"):
        assert 'model_version="v2",namespace="prod",role="candidate"' in exprs[name]
    assert (
        'model_version="v1",namespace="prod",path="served",role="stable"'
        in (exprs["stable_latency"])
    )
    for name in ("served_latency", "served_buckets"):
        assert 'model_version="v2",namespace="prod",path="served",role="candidate"' in (exprs[name])
    assert 'model_version="v1",namespace="prod",served_by="stable"' in exprs["feedback"]


@pytest.mark.parametrize(
    ("figure", "expected"),
    [
        (
            "samples",
            'sum((increase(modelrollout_shadow_comparisons_total{baseline_version=~"v1|none",'
            'namespace="prod",shadow_version="v2",target="cards"}[60s]) or '
            'increase(modelrollout_shadow_comparisons_total{baseline="candidate",'
            'baseline_version="v2",namespace="prod",shadow_version="v1",target="cards"}[60s])))',
        ),
        (
            "latency",
            "histogram_quantile(0.95, sum by (le) (rate(modelrollout_inference_seconds_bucket"
            '{model_version="v2",namespace="prod",role="candidate",target="cards"}[60s])))',
        ),
        (
            "errors",
            'sum(increase(modelrollout_model_errors_total{model_version="v2",'
            'namespace="prod",role="candidate",target="cards"}[60s]))',
        ),
    ],
)
def test_figure_expressions(figure: str, expected: str) -> None:
    assert figure_exprs(SCOPE)[figure] == expected


def test_the_quantile_is_the_spec_s() -> None:
    scope = Scope("v2", "v1", "60s", {}, target="cards", quantile=0.99)
    assert figure_exprs(scope)["latency"].startswith("histogram_quantile(0.99, ")
    assert figure_exprs(scope)["stable_latency"].startswith("histogram_quantile(0.99, ")


def test_without_a_stable_model_only_comparisons_with_rules_count() -> None:
    exprs = figure_exprs(Scope("v2", None, "60s", {}, target="cards"))
    assert 'baseline_version=~"none"' in exprs["samples"]
    assert 'baseline="candidate"' not in exprs["samples"]
    assert "stable_latency" not in exprs
    assert 'served_by="stable"' not in exprs["feedback"]


def test_version_matchers_are_regex_escaped() -> None:
    expr = figure_exprs(Scope("v2", "v1.0", "60s", {}, target="t"))["samples"]
    assert 'baseline_version=~"v1\\\\.0|none"' in expr


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
            _sample("0.0", figure="category_agreement", category="cinema"),
            _sample("0.5", figure="category_agreement", category="toys"),
            _sample("300", figure="category_samples", category="coffee"),
            _sample("50", figure="category_samples", category="rent"),
            _sample("3", figure="category_samples", category="gym"),
            _sample("19", figure="category_samples", category="cinema"),
            _sample("25", figure="category_samples", category="toys"),
            _sample("0.004", figure="latency"),
            _sample("0.003", figure="stable_latency"),
            _sample("0.0035", figure="served_latency"),
            _sample("390", figure="served_buckets", le="0.005"),
            _sample("400", figure="served_buckets", le="+Inf"),
            _sample("395", figure="served_buckets", le="0.01"),
            _sample("1000", figure="evaluations"),
            _sample("5", figure="errors"),
            _sample("40", figure="feedback", served_by="candidate", outcome="accepted"),
            _sample("10", figure="feedback", served_by="candidate", outcome="rejected"),
            _sample("90", figure="feedback", served_by="stable", outcome="accepted"),
            _sample("10", figure="feedback", served_by="stable", outcome="rejected"),
        ],
    }
    f = parse_analysis(data, min_category_samples=50)
    assert f.samples == 500
    assert f.agreement == pytest.approx(0.93)
    assert (f.worst_category, f.worst_category_agreement) == ("rent", pytest.approx(0.40))
    # gym (3) and cinema (19, none agreeing) have too few comparisons to be judged at all;
    # toys (25) is judged early on its bound: 0.5 in 25 is not yet clear at 3 sigma.
    assert (f.clear_category, f.clear_category_samples) == ("toys", 25)
    assert f.clear_category_bound == pytest.approx(wilson_upper(0.5, 25))
    assert f.clear_category_bound > 0.7
    assert (f.latency_seconds, f.stable_latency_seconds) == (0.004, 0.003)
    assert (f.served_latency_seconds, f.served_evaluations) == (0.0035, 400)
    # The served histogram, ascending by bound, +Inf last, for the relative bound's test.
    assert f.served_latency_buckets == ((0.005, 390), (0.01, 395), (float("inf"), 400))
    assert "servedLatencyBuckets" not in f.model_dump(by_alias=True)  # not in status
    assert f.latency_quantile == 0.95
    assert (f.errors, f.evaluations) == (5, 1000)
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
    data = {"result": [_sample("NaN", figure="agreement"), _sample("+Inf", figure="latency")]}
    f = parse_analysis(data, min_category_samples=1)
    assert f.agreement is None
    assert f.latency_seconds == 1.0


def test_first_value_of_scalar_and_vector() -> None:
    assert first_value({"resultType": "scalar", "result": [1.0, "0.5"]}) == 0.5
    assert first_value({"resultType": "vector", "result": [_sample("2")]}) == 2.0
    assert first_value({"resultType": "vector", "result": []}) is None


@pytest.mark.parametrize(
    ("ratio", "n", "below"),
    [(0.0, 14, 0.40), (0.0, 5, 0.65), (0.0, 2, 0.82), (0.9, 1000, 0.93), (1.0, 3, 1.0001)],
)
def test_wilson_upper_bound(ratio: float, n: float, below: float) -> None:
    bound = wilson_upper(ratio, n)
    assert ratio <= bound < below
