"""Metrics arithmetic, the evaluation gate and the proposal rule, as tables."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import MetricValue, classification_metrics, expected_calibration_error
from training.gate import GateConfig, evaluate_gate, proposal_decision

pytestmark = pytest.mark.unit


def test_classification_metrics_by_hand() -> None:
    # true:  a a a b b c ; predicted: a a b b c (none)
    m = classification_metrics(
        ["a", "a", "a", "b", "b", "c"], ["a", "a", "b", "b", "c", None], ["a", "b", "c"]
    )
    assert m.accuracy == pytest.approx(3 / 6)
    assert m.precision == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert m.recall == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 0.0})
    assert m.f1 == pytest.approx({"a": 0.8, "b": 0.5, "c": 0.0})
    assert m.macro_f1 == pytest.approx((0.8 + 0.5 + 0.0) / 3)
    assert m.support == {"a": 3.0, "b": 2.0, "c": 1.0}
    assert m.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_a_label_outside_the_classes_is_wrong_and_unlisted() -> None:
    m = classification_metrics(["a", "b"], ["Other", "b"], ["a", "b"])
    assert m.accuracy == 0.5
    assert m.recall["a"] == 0.0
    assert m.confusion == [[0, 0], [0, 1]]


def test_metrics_need_labels() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        classification_metrics([], [], ["a"])


@pytest.mark.parametrize(
    ("y", "proba", "ece"),
    [
        # perfectly calibrated: confidence 1 and always right
        ([0, 1], [[1.0, 0.0], [0.0, 1.0]], 0.0),
        # both in the 0.9 bin, one right: |0.9 - 0.5| = 0.4
        ([0, 0], [[0.9, 0.1], [0.1, 0.9]], 0.4),
        # bins 0.9 (right, gap 0.1) and 0.6 (wrong, gap 0.6): (0.1 + 0.6) / 2
        ([0, 1], [[0.9, 0.1], [0.6, 0.4]], 0.35),
    ],
)
def test_expected_calibration_error(y: list[int], proba: list[list[float]], ece: float) -> None:
    assert expected_calibration_error(np.array(y), np.array(proba), bins=10) == pytest.approx(ece)


def _metrics(f1: float, rules: float | None = None) -> dict[str, MetricValue]:
    out: dict[str, MetricValue] = {"macro_f1": f1, "accuracy": f1}
    if rules is not None:
        out["rules_macro_f1"] = rules
    return out


@pytest.mark.parametrize(
    ("metrics", "config", "baseline", "publish", "failures"),
    [
        # threshold (and the rules, when scored: both by default)
        (_metrics(0.80), GateConfig(), None, True, []),
        (_metrics(0.70), GateConfig(), None, False, ["macro-F1 0.7000 < threshold 0.7500"]),
        (_metrics(0.75), GateConfig(), None, True, []),
        # the rules: binding by default, reported only when not required
        (_metrics(0.80, rules=0.90), GateConfig(require_beat_rules=False), None, True, []),
        (
            _metrics(0.80, rules=0.90),
            GateConfig(),
            None,
            False,
            ["macro-F1 0.8000 <= rules 0.9000"],
        ),
        (_metrics(0.92, rules=0.90), GateConfig(require_beat_rules=True), None, True, []),
        (
            _metrics(0.92, rules=0.90),
            GateConfig(require_beat_rules=True, min_margin_over_rules=0.05),
            None,
            False,
            ["macro-F1 0.9200 <= rules 0.9000 + margin 0.0500"],
        ),
        (_metrics(0.80), GateConfig(require_beat_rules=True), None, True, []),  # not scored
        # a baseline (the current stable's manifest metrics)
        (
            _metrics(0.86),
            GateConfig(min_margin_over_baseline=0.02),
            _metrics(0.85),
            False,
            ["macro-F1 0.8600 < baseline 0.8500 + margin 0.0200"],
        ),
        (_metrics(0.88), GateConfig(min_margin_over_baseline=0.02), _metrics(0.85), True, []),
        (_metrics(0.80), GateConfig(), _metrics(0.95), True, []),  # no margin: not compared
        (
            _metrics(0.80),
            GateConfig(min_margin_over_baseline=0.0),
            {"accuracy": 0.9},
            False,
            ["baseline has no macro_f1 to compare with"],
        ),
        # missing figures fail closed
        ({"accuracy": 0.9}, GateConfig(), None, False, ["the metrics have no macro_f1"]),
        # not enforced: every check reported, published anyway
        (_metrics(0.10), GateConfig(enforce=False), None, True, []),
    ],
)
def test_the_gate(
    metrics: dict[str, MetricValue],
    config: GateConfig,
    baseline: dict[str, MetricValue] | None,
    publish: bool,
    failures: list[str],
) -> None:
    decision = evaluate_gate(metrics, config, baseline)
    assert decision.publish is publish
    if config.enforce:
        assert list(decision.failures) == failures
        assert decision.checks_passed is publish


def test_an_unenforced_gate_still_says_what_failed() -> None:
    decision = evaluate_gate(_metrics(0.1), GateConfig(enforce=False))
    assert not decision.checks_passed
    assert decision.failures == ("macro-F1 0.1000 < threshold 0.7500",)
    assert "publishing anyway" in decision.summary()


def test_the_rules_check_is_required_by_default() -> None:
    decision = evaluate_gate(_metrics(0.8, rules=0.9), GateConfig())
    assert not decision.checks_passed
    assert not decision.publish
    assert decision.failures == ("macro-F1 0.8000 <= rules 0.9000",)


def test_an_unrequired_rules_check_is_information() -> None:
    decision = evaluate_gate(_metrics(0.8, rules=0.9), GateConfig(require_beat_rules=False))
    assert decision.checks_passed
    assert "info  beats_rules: macro-F1 0.8000 <= rules 0.9000" in decision.summary()


@pytest.mark.parametrize(
    ("new", "stable", "margin", "propose"),
    [
        (_metrics(0.84), _metrics(0.82), 0.01, True),
        (_metrics(0.83), _metrics(0.82), 0.02, False),
        (_metrics(0.83), _metrics(0.83), 0.0, True),
        (_metrics(0.70), None, 0.01, True),  # no stable yet: nothing to beat
        (_metrics(0.90), {"accuracy": 0.9}, 0.01, False),
        ({"accuracy": 0.9}, _metrics(0.5), 0.01, False),
    ],
)
def test_a_model_is_proposed_only_when_it_beats_the_stable(
    new: dict[str, MetricValue],
    stable: dict[str, MetricValue] | None,
    margin: float,
    propose: bool,
) -> None:
    decision = proposal_decision(new, stable, margin)
    assert decision.propose is propose
    assert decision.reason.startswith("proposed" if propose else "not proposed")
