"""Spec parsing at the controller's boundary: defaults like the CRD's, clear errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from controller.model import (
    RolloutSpec,
    SpecError,
    parse_duration,
    parse_spec,
    parse_status,
)

pytestmark = pytest.mark.unit

MINIMAL: dict[str, Any] = {"target": "suggest", "model": {"version": "v2"}}


def test_minimal_spec_gets_the_crd_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.shadow.percent == 100
    assert spec.shadow.passes == 3
    assert spec.canary.effective_steps() == [100.0]
    assert spec.analysis.interval == "10s"
    assert spec.analysis.window == "1m"
    assert spec.analysis.thresholds.min_agreement == 0.9
    assert spec.analysis.inconclusive_policy == "Hold"
    assert spec.alerts.enabled
    assert not spec.paused
    assert spec.retry == 0


def test_camel_case_round_trip() -> None:
    raw = {
        **MINIMAL,
        "canary": {"percent": 50, "steps": [5, 20], "stepInterval": "1m"},
        "analysis": {"prometheusURL": "http://prom:9090", "thresholds": {"maxErrorRate": 0.02}},
    }
    spec = parse_spec(raw)
    assert spec.analysis.prometheus_url == "http://prom:9090"
    assert spec.canary.effective_steps() == [5.0, 20.0, 50.0]
    assert spec.dump()["analysis"]["prometheusURL"] == "http://prom:9090"
    assert RolloutSpec.model_validate(spec.dump()) == spec


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"model": {"version": "../etc"}}, "spec.model.version"),
        ({"canary": {"percent": 50, "steps": [10, 5]}}, "strictly increasing"),
        ({"canary": {"percent": 50, "steps": [10, 60]}}, "must not exceed"),
        ({"shadow": {"percent": 101}}, "spec.shadow.percent"),
        ({"analysis": {"interval": "30s", "window": "10s"}}, "window 10s < analysis.interval"),
        ({"analysis": {"interval": "10x"}}, "spec.analysis.interval"),
        ({"analysis": {"customChecks": [{"name": "c", "query": "q"}]}}, "needs min or max"),
        ({"target": "Bad_Target"}, "spec.target"),
    ],
)
def test_invalid_specs_say_which_field(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        parse_spec({**MINIMAL, **patch})


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("10s", 10), ("1m30s", 90), ("2h", 7200), ("1.5m", 90)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_unreadable_status_fields_are_dropped_not_fatal() -> None:
    st = parse_status({"phase": "Canary", "passes": "many", "stableVersion": "v1"})
    assert st.phase == "Canary"
    assert st.passes == 0
    assert st.stable_version == "v1"
    assert parse_status({"phase": "SomethingNew"}).phase == "Pending"
    assert parse_status(None).phase == "Pending"
