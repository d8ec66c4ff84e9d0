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


GOOD_Q = {"version": "v2", "reason": "AlertFiring", "time": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("field", "entries", "kept"),
    [
        # A bad quarantine entry dropped the whole list: every version un-quarantined.
        pytest.param("quarantined", [{"version": "v1"}, GOOD_Q], ["v2"], id="quarantine"),
        pytest.param("quarantined", [GOOD_Q, "junk", {**GOOD_Q, "version": "../x"}], ["v2"],
                     id="quarantine-junk-and-bad-version"),
        pytest.param("handledAlerts", ["a@t", {"not": "a string"}, "b@t"], ["a@t", "b@t"],
                     id="handled-alerts"),
        pytest.param("history", [{"time": "2026-01-01T00:00:00Z", "from": "Shadow",
                                  "to": "Canary", "reason": "ShadowPassed"}, {"to": "x"}],
                     ["ShadowPassed"], id="history"),
    ],
)  # fmt: skip
def test_one_malformed_status_entry_drops_that_entry_only(
    field: str, entries: list[object], kept: list[str]
) -> None:
    st = parse_status({"phase": "RolledBack", field: entries})
    values = getattr(st, {"handledAlerts": "handled_alerts"}.get(field, field))
    shown = [getattr(v, "version", None) or getattr(v, "reason", v) for v in values]
    assert shown == kept
    assert st.phase == "RolledBack"


def test_bake_window_and_progress_deadline_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.analysis.post_promotion_window == "5m"
    assert spec.progress_deadline == "10m"
    assert spec.progress_deadline_policy == "Hold"
    with pytest.raises(SpecError, match=r"spec\.progressDeadlinePolicy"):
        parse_spec({**MINIMAL, "progressDeadlinePolicy": "Panic"})
