"""The rollout decision as a table: (spec, status, observed) -> phase, serving, log, events.

Every row is also decided a second time on its own result with the same observation, and
must change nothing (idempotence: a controller that ticks twice never advances twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.decide import Observed, Plan, analysis_due, decide, served_for
from controller.model import (
    AnalysisOutcome,
    AnalysisResult,
    Phase,
    Promotion,
    Quarantine,
    ReceivedAlert,
    RolloutSpec,
    RolloutStatus,
)
from service.serving_config import PodReport, ServingConfig

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
GEN = 5


def make_spec(**overrides: Any) -> RolloutSpec:
    raw: dict[str, Any] = {
        "target": "suggest",
        "model": {"version": "v2"},
        "shadow": {"percent": 100, "passes": 3},
        "canary": {"percent": 100, "steps": [10, 50], "stepInterval": "30s"},
        "analysis": {"interval": "10s", "failureLimit": 1, "inconclusiveLimit": 3},
    }
    for path, value in overrides.items():
        node = raw
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return RolloutSpec.model_validate(raw)


def analysis(outcome: AnalysisOutcome, *, at: datetime = NOW, cand: str = "v2") -> AnalysisResult:
    reasons = {AnalysisOutcome.FAIL: ["agreement 0.500 < 0.900"]}.get(outcome, [])
    if outcome == AnalysisOutcome.INCONCLUSIVE:
        reasons = ["3 comparisons < minSamples 100"]
    return AnalysisResult(time=at, candidate=cand, outcome=outcome, reasons=reasons)


PASS_EARLIER = analysis(AnalysisOutcome.PASS, at=NOW - timedelta(seconds=20))


def in_flight(
    spec: RolloutSpec,
    phase: Phase,
    *,
    step: int | None = None,
    passes: int = 0,
    since: datetime = NOW - timedelta(minutes=1),
    last: AnalysisResult | None = None,
    **extra: Any,
) -> RolloutStatus:
    """A status in the middle of a rollout of v2 over v1, whose serving is in place."""
    st = RolloutStatus(
        phase=phase,
        stable_version="v1",
        candidate_version="v2",
        step_index=step,
        passes=passes,
        phase_since=since,
        candidate_since=T0,
        candidate_generation=GEN - 1,
        serving_generation=GEN,
        last_analysis=last,
        observed_generation=1,
    )
    st = st.model_copy(update=extra)
    st.serving = served_for(spec, st)
    return st


def pods(generation: int = GEN, **load_errors: str) -> list[PodReport]:
    return [
        PodReport(pod="suggest-a", generation=generation, load_errors=load_errors),
        PodReport(pod="suggest-b", generation=generation),
    ]


def alert(fp: str = "abc123") -> ReceivedAlert:
    return ReceivedAlert(
        fingerprint=fp,
        starts_at="2026-01-01T00:59:00Z",
        alertname="SuggestAgreementDrop",
        received=NOW,
    )


@dataclass
class Row:
    id: str
    spec: RolloutSpec
    status: RolloutStatus
    observed: Observed
    phase: Phase
    reasons: list[str] = field(default_factory=list)
    """Reasons of the decisions logged, in order."""
    events: list[str] = field(default_factory=list)
    """Reasons of Events that must be among those planned."""
    stable: str | None = "v1"
    candidate: str | None = "v2"
    served_candidate: str | bool | None = False
    """Expected candidate in the serving config (False: do not check)."""
    canary: float | None = None
    bumped: bool | None = None
    """Whether the serving generation must grow (None: do not check)."""
    check: dict[str, Any] = field(default_factory=dict)


S = make_spec()
PASS = analysis(AnalysisOutcome.PASS)
FAIL = analysis(AnalysisOutcome.FAIL)
INCONCLUSIVE = analysis(AnalysisOutcome.INCONCLUSIVE)
CLUSTER_V1 = ServingConfig(generation=57, stable="v1")
PROMOTED = Promotion(version="v2", previous="v1", time=NOW - timedelta(seconds=30))

ROWS = [
    # ---------------------------------------------------------------- starting
    Row(
        "pending-adopts-stable-and-starts-shadow",
        S,
        RolloutStatus(),
        Observed(generation=1, in_cluster=CLUSTER_V1),
        Phase.SHADOW,
        ["Started"],
        ["Started"],
        served_candidate="v2",
        canary=0.0,
        bumped=True,
        check={"serving_generation": 58, "shadow_percent": 100.0, "candidate_generation": 58},
    ),
    Row(
        "pending-without-a-model-shadows-against-rules",
        S,
        RolloutStatus(),
        Observed(generation=1),
        Phase.SHADOW,
        ["Started"],
        stable=None,
        served_candidate="v2",
        bumped=True,
        check={"serving_generation": 1},
    ),
    Row(
        "pending-with-the-spec-naming-what-serves-is-succeeded",
        make_spec(**{"model.version": "v1"}),
        RolloutStatus(),
        Observed(generation=1, in_cluster=CLUSTER_V1),
        Phase.SUCCEEDED,
        ["StableRequested"],
        candidate=None,
        served_candidate=None,
    ),
    Row(
        "paused-at-creation-starts-nothing",
        make_spec(paused=True),
        RolloutStatus(),
        Observed(generation=1),
        Phase.PENDING,
        stable=None,
        candidate=None,
        check={"serving": None, "serving_generation": 0},
    ),
    # ---------------------------------------------------------------- shadow
    Row(
        "shadow-pass-counts-but-needs-three",
        S,
        in_flight(S, Phase.SHADOW, passes=1),
        Observed(reports=pods(), analysis=PASS),
        Phase.SHADOW,
        check={"passes": 2},
        bumped=False,
    ),
    Row(
        "shadow-third-pass-starts-canary-first-step",
        S,
        in_flight(S, Phase.SHADOW, passes=2),
        Observed(reports=pods(), analysis=PASS),
        Phase.CANARY,
        ["ShadowPassed"],
        ["ShadowPassed"],
        canary=10.0,
        bumped=True,
        check={"step_index": 0, "passes": 0},
    ),
    Row(
        "shadow-passes-but-pods-not-converged-waits",
        S,
        in_flight(S, Phase.SHADOW, passes=2),
        Observed(reports=pods(GEN - 1), analysis=PASS),
        Phase.SHADOW,
        check={"passes": 3},
        bumped=False,
    ),
    Row(
        "shadow-passes-but-duration-not-elapsed-waits",
        make_spec(**{"shadow.duration": "5m"}),
        in_flight(make_spec(), Phase.SHADOW, passes=2),
        Observed(reports=pods(), analysis=PASS),
        Phase.SHADOW,
        check={"passes": 3},
    ),
    Row(
        "shadow-enough-passes-earlier-then-inconclusive-does-not-advance",
        S,
        in_flight(S, Phase.SHADOW, passes=3, last=PASS_EARLIER),
        Observed(reports=pods(GEN - 1)),
        Phase.SHADOW,
        check={"passes": 3},
    ),
    Row(
        "shadow-inconclusive-never-advances",
        S,
        in_flight(S, Phase.SHADOW, passes=3, last=PASS_EARLIER),
        Observed(reports=pods(), analysis=INCONCLUSIVE),
        Phase.SHADOW,
        # "consecutive" passes: an inconclusive analysis breaks the run (it did not).
        check={"passes": 0, "consecutive_inconclusive": 1},
    ),
    Row(
        "inconclusive-between-passes-restarts-the-count",
        S,
        in_flight(S, Phase.SHADOW, passes=2, last=PASS_EARLIER),
        Observed(reports=pods(), analysis=INCONCLUSIVE),
        Phase.SHADOW,
        check={"passes": 0},
    ),
    Row(
        "shadow-passed-with-no-canary-promotes",
        make_spec(**{"canary.percent": 0, "canary.steps": []}),
        in_flight(make_spec(), Phase.SHADOW, passes=2),
        Observed(reports=pods(), analysis=PASS),
        Phase.PROMOTING,
        ["ShadowPassed"],
        stable="v2",
        candidate=None,
        served_candidate=None,
    ),
    # ---------------------------------------------------------------- canary
    Row(
        "canary-step-passes-after-interval-advances",
        S,
        in_flight(S, Phase.CANARY, step=0),
        Observed(reports=pods(), analysis=PASS),
        Phase.CANARY,
        ["StepAdvanced"],
        canary=50.0,
        bumped=True,
        check={"step_index": 1},
    ),
    Row(
        "canary-step-passes-before-interval-waits",
        S,
        in_flight(S, Phase.CANARY, step=0, since=NOW - timedelta(seconds=12)),
        Observed(reports=pods(), analysis=PASS),
        Phase.CANARY,
        canary=10.0,
        bumped=False,
        check={"passes": 1},
    ),
    Row(
        "canary-last-step-passes-promotes",
        S,
        in_flight(S, Phase.CANARY, step=2),
        Observed(reports=pods(), analysis=PASS),
        Phase.PROMOTING,
        ["CanaryPassed"],
        stable="v2",
        candidate=None,
        served_candidate=None,
        canary=0.0,
        bumped=True,
        check={"promotion": Promotion(version="v2", previous="v1", time=NOW)},
    ),
    Row(
        "canary-percent-set-to-zero-mid-canary-holds-rather-than-promotes",
        make_spec(**{"canary.percent": 0, "canary.steps": []}),
        in_flight(S, Phase.CANARY, step=1),
        Observed(reports=pods(), analysis=PASS),
        Phase.CANARY,
        events=["CanaryHeld"],
        served_candidate="v2",
        canary=0.0,
        check={"promotion": None, "message": lambda m: m.startswith("holding")},
    ),
    Row(
        "canary-last-step-without-auto-promote-awaits",
        make_spec(autoPromote=False),
        in_flight(S, Phase.CANARY, step=2),
        Observed(reports=pods(), analysis=PASS),
        Phase.CANARY,
        events=["AwaitingPromotion"],
        canary=100.0,
        bumped=False,
    ),
    Row(
        "canary-steps-shortened-clamps-the-step",
        make_spec(**{"canary.steps": [10]}),
        in_flight(S, Phase.CANARY, step=2, since=NOW),
        Observed(reports=pods()),
        Phase.CANARY,
        canary=100.0,
        check={"step_index": 1},
    ),
    # ---------------------------------------------------------------- promotion
    Row(
        "promoting-converged-succeeds",
        S,
        in_flight(S, Phase.PROMOTING, stable_version="v2", candidate_version=None),
        Observed(reports=pods()),
        Phase.SUCCEEDED,
        ["Promoted"],
        stable="v2",
        candidate=None,
    ),
    Row(
        "promoting-not-converged-waits",
        S,
        in_flight(S, Phase.PROMOTING, stable_version="v2", candidate_version=None),
        Observed(reports=pods(GEN - 1)),
        Phase.PROMOTING,
        stable="v2",
        candidate=None,
    ),
    Row(
        "paused-while-promoting-still-finishes",
        make_spec(paused=True),
        in_flight(
            S, Phase.PROMOTING, stable_version="v2", candidate_version=None, promotion=PROMOTED
        ),
        Observed(reports=pods()),
        Phase.SUCCEEDED,
        ["Promoted"],
        stable="v2",
        candidate=None,
        check={"promotion": PROMOTED.model_copy(update={"time": NOW})},
    ),
    Row(
        "alert-while-promoting-rolls-back-to-the-previous-stable",
        S,
        in_flight(
            S, Phase.PROMOTING, stable_version="v2", candidate_version=None, promotion=PROMOTED
        ),
        Observed(reports=pods(GEN - 1), alerts=[alert()]),
        Phase.ROLLED_BACK,
        ["AlertFiring"],
        ["AlertFiring"],
        stable="v1",
        candidate="v2",
        served_candidate=None,
        bumped=True,
        check={
            "promotion": None,
            "quarantined": lambda q: q[-1].version == "v2",
            "message": lambda m: "all traffic back to v1" in m,
        },
    ),
    Row(
        "alert-inside-the-post-promotion-window-rolls-back-to-the-previous-stable",
        S,
        in_flight(
            S,
            Phase.SUCCEEDED,
            stable_version="v2",
            candidate_version=None,
            promotion=PROMOTED.model_copy(update={"time": NOW - timedelta(minutes=4)}),
        ),
        Observed(reports=pods(), alerts=[alert()]),
        Phase.ROLLED_BACK,
        ["AlertFiring"],
        stable="v1",
        candidate="v2",
        served_candidate=None,
        bumped=True,
        check={"quarantined": lambda q: q[-1].version == "v2"},
    ),
    Row(
        "abort-inside-the-post-promotion-window-rolls-back",
        S,
        in_flight(
            S, Phase.SUCCEEDED, stable_version="v2", candidate_version=None, promotion=PROMOTED
        ),
        Observed(reports=pods(), abort_token="t1"),
        Phase.ROLLED_BACK,
        ["ManualAbort"],
        stable="v1",
        candidate="v2",
        served_candidate=None,
    ),
    Row(
        "promoted-over-rules-rolls-back-to-rules",
        S,
        in_flight(
            S,
            Phase.SUCCEEDED,
            stable_version="v2",
            candidate_version=None,
            promotion=Promotion(version="v2", previous=None, time=NOW),
        ),
        Observed(reports=pods(), alerts=[alert()]),
        Phase.ROLLED_BACK,
        ["AlertFiring"],
        stable=None,
        candidate="v2",
        served_candidate=None,
    ),
    Row(
        "alert-after-the-post-promotion-window-is-ignored",
        S,
        in_flight(
            S,
            Phase.SUCCEEDED,
            stable_version="v2",
            candidate_version=None,
            promotion=PROMOTED.model_copy(update={"time": NOW - timedelta(minutes=6)}),
        ),
        Observed(reports=pods(), alerts=[alert()]),
        Phase.SUCCEEDED,
        events=["AlertIgnored", "PromotionBaked"],
        stable="v2",
        candidate=None,
        check={"promotion": None},
    ),
    Row(
        "post-promotion-window-passes-and-the-rollback-target-is-dropped",
        S,
        in_flight(
            S,
            Phase.SUCCEEDED,
            stable_version="v2",
            candidate_version=None,
            promotion=PROMOTED.model_copy(update={"time": NOW - timedelta(minutes=5)}),
        ),
        Observed(reports=pods()),
        Phase.SUCCEEDED,
        events=["PromotionBaked"],
        stable="v2",
        candidate=None,
        bumped=False,
        check={"promotion": None},
    ),
    Row(
        "a-new-candidate-after-promotion-drops-the-old-rollback-target",
        make_spec(**{"model.version": "v3"}),
        in_flight(
            S, Phase.SUCCEEDED, stable_version="v2", candidate_version=None, promotion=PROMOTED
        ),
        Observed(reports=pods()),
        Phase.SHADOW,
        ["Started"],
        stable="v2",
        candidate="v3",
        check={"promotion": None},
    ),
    # ---------------------------------------------------------------- progress deadline
    Row(
        "stage-past-its-progress-deadline-holds-with-a-condition-and-an-event",
        S,
        in_flight(S, Phase.CANARY, step=0, since=NOW - timedelta(minutes=10, seconds=31)),
        Observed(reports=pods(GEN - 1)),
        Phase.CANARY,
        events=["ProgressDeadlineExceeded"],
        canary=10.0,
        check={
            "conditions": lambda cs: any(
                c.type == "Progressing"
                and c.status == "False"
                and c.reason == "ProgressDeadlineExceeded"
                for c in cs
            )
        },
    ),
    Row(
        "stage-within-its-least-time-plus-deadline-is-progressing",
        make_spec(**{"shadow.duration": "1h"}),
        in_flight(S, Phase.SHADOW, since=NOW - timedelta(minutes=50)),
        Observed(reports=pods(GEN - 1)),
        Phase.SHADOW,
        check={
            "conditions": lambda cs: any(c.type == "Progressing" and c.status == "True" for c in cs)
        },
    ),
    Row(
        "progress-deadline-with-rollback-policy-rolls-back",
        make_spec(progressDeadline="1m", progressDeadlinePolicy="Rollback"),
        in_flight(S, Phase.SHADOW, since=NOW - timedelta(minutes=2)),
        Observed(reports=pods(GEN - 1)),
        Phase.ROLLED_BACK,
        ["ProgressDeadlineExceeded"],
        served_candidate=None,
        check={"quarantined": lambda q: q[-1].version == "v2"},
    ),
    Row(
        "promotion-that-never-converges-rolls-back-with-rollback-policy",
        make_spec(progressDeadline="1m", progressDeadlinePolicy="Rollback"),
        in_flight(
            S,
            Phase.PROMOTING,
            stable_version="v2",
            candidate_version=None,
            promotion=PROMOTED,
            since=NOW - timedelta(minutes=2),
        ),
        Observed(reports=pods(GEN - 1)),
        Phase.ROLLED_BACK,
        ["ProgressDeadlineExceeded"],
        stable="v1",
        candidate="v2",
    ),
    Row(
        "progress-deadline-zero-never-expires",
        make_spec(progressDeadline="0s", progressDeadlinePolicy="Rollback"),
        in_flight(S, Phase.SHADOW, since=NOW - timedelta(days=2)),
        Observed(reports=pods(GEN - 1)),
        Phase.SHADOW,
    ),
    Row(
        "awaiting-manual-promotion-is-not-a-lack-of-progress",
        make_spec(autoPromote=False, progressDeadline="1m", progressDeadlinePolicy="Rollback"),
        in_flight(
            S,
            Phase.CANARY,
            step=2,
            since=NOW - timedelta(minutes=5),
            message="awaiting promotion (canary 100% passed): annotate to promote",
        ),
        Observed(reports=pods()),
        Phase.CANARY,
        canary=100.0,
    ),
    # ---------------------------------------------------------------- stable health
    Row(
        "stable-that-fails-to-load-is-shown-and-no-pass-counts-against-rules",
        S,
        in_flight(S, Phase.SHADOW, passes=2),
        Observed(reports=pods(v1="sha256 of model.txt differs"), analysis=PASS),
        Phase.SHADOW,
        events=["StableNotServing"],
        served_candidate="v2",
        check={
            "passes": 0,
            "last_analysis": lambda a: (
                a.outcome == AnalysisOutcome.INCONCLUSIVE and "compared with rules" in a.reasons[0]
            ),
            "conditions": lambda cs: any(
                c.type == "StableServing" and c.status == "False" for c in cs
            ),
            "spec_vs_served": lambda lines: any("not loaded on suggest-a" in x for x in lines),
        },
    ),
    Row(
        "stable-that-fails-to-load-does-not-hide-a-failing-candidate",
        S,
        in_flight(S, Phase.SHADOW, passes=2),
        Observed(reports=pods(v1="missing"), analysis=FAIL),
        Phase.ROLLED_BACK,
        ["AnalysisFailed"],
    ),
    Row(
        "succeeded-is-steady",
        make_spec(**{"model.version": "v2"}),
        in_flight(S, Phase.SUCCEEDED, stable_version="v2", candidate_version=None),
        Observed(reports=pods()),
        Phase.SUCCEEDED,
        stable="v2",
        candidate=None,
        bumped=False,
    ),
    Row(
        "succeeded-then-a-new-version-starts-over",
        make_spec(**{"model.version": "v3"}),
        in_flight(S, Phase.SUCCEEDED, stable_version="v2", candidate_version=None),
        Observed(reports=pods()),
        Phase.SHADOW,
        ["Started"],
        stable="v2",
        candidate="v3",
        served_candidate="v3",
        bumped=True,
    ),
    # ---------------------------------------------------------------- failing
    Row(
        "fail-at-limit-rolls-back-and-quarantines",
        S,
        in_flight(S, Phase.CANARY, step=1),
        Observed(reports=pods(), analysis=FAIL),
        Phase.ROLLED_BACK,
        ["AnalysisFailed"],
        ["AnalysisFailed"],
        served_candidate=None,
        canary=0.0,
        bumped=True,
        check={"quarantined": lambda q: [e.version for e in q] == ["v2"]},
    ),
    Row(
        "fail-below-limit-warns-and-holds",
        make_spec(**{"analysis.failureLimit": 2}),
        in_flight(S, Phase.CANARY, step=1),
        Observed(reports=pods(), analysis=FAIL),
        Phase.CANARY,
        events=["AnalysisFailed"],
        canary=50.0,
        bumped=False,
        check={"consecutive_failures": 1, "passes": 0},
    ),
    Row(
        "inconclusive-below-limit-holds",
        S,
        in_flight(S, Phase.SHADOW, consecutive_inconclusive=1),
        Observed(reports=pods(), analysis=INCONCLUSIVE),
        Phase.SHADOW,
        check={"consecutive_inconclusive": 2},
    ),
    Row(
        "inconclusive-at-limit-with-hold-policy-holds-and-warns",
        S,
        in_flight(S, Phase.CANARY, step=0, consecutive_inconclusive=2),
        Observed(reports=pods(), analysis=INCONCLUSIVE),
        Phase.CANARY,
        events=["AnalysisHeld"],
        canary=10.0,
        bumped=False,
        check={"consecutive_inconclusive": 3, "message": lambda m: m.startswith("holding")},
    ),
    Row(
        "inconclusive-at-limit-with-rollback-policy-rolls-back",
        make_spec(**{"analysis.inconclusivePolicy": "Rollback"}),
        in_flight(S, Phase.CANARY, step=0, consecutive_inconclusive=2),
        Observed(reports=pods(), analysis=INCONCLUSIVE),
        Phase.ROLLED_BACK,
        ["Inconclusive"],
        served_candidate=None,
        bumped=True,
    ),
    Row(
        "candidate-that-fails-to-load-fails-the-rollout",
        S,
        in_flight(S, Phase.SHADOW),
        Observed(reports=pods(v2="sha256 mismatch")),
        Phase.FAILED,
        ["LoadError"],
        ["LoadError"],
        served_candidate=None,
        bumped=True,
        check={"message": lambda m: "sha256 mismatch" in m and "back to v1" in m},
    ),
    Row(
        "stale-load-error-from-before-the-candidate-is-ignored",
        S,
        in_flight(S, Phase.SHADOW, candidate_generation=GEN),
        Observed(reports=[PodReport(pod="a", generation=GEN - 1, load_errors={"v2": "old"})]),
        Phase.SHADOW,
    ),
    Row(
        "rollback-with-no-stable-returns-to-rules",
        S,
        in_flight(S, Phase.SHADOW, stable_version=None),
        Observed(analysis=FAIL),
        Phase.ROLLED_BACK,
        ["AnalysisFailed"],
        stable=None,
        served_candidate=None,
        check={"message": lambda m: m.endswith("back to rules")},
    ),
    # ---------------------------------------------------------------- alerts, requests
    Row(
        "firing-alert-rolls-back",
        S,
        in_flight(S, Phase.CANARY, step=1),
        Observed(reports=pods(), alerts=[alert()]),
        Phase.ROLLED_BACK,
        ["AlertFiring"],
        ["AlertFiring"],
        served_candidate=None,
        bumped=True,
        check={"handled_alerts": ["abc123@2026-01-01T00:59:00Z"]},
    ),
    Row(
        "alert-already-handled-changes-nothing",
        S,
        in_flight(S, Phase.CANARY, step=1, handled_alerts=["abc123@2026-01-01T00:59:00Z"]),
        Observed(reports=pods(), alerts=[alert()]),
        Phase.CANARY,
        canary=50.0,
        bumped=False,
    ),
    Row(
        "alert-with-nothing-in-flight-is-ignored",
        S,
        in_flight(S, Phase.SUCCEEDED, stable_version="v2", candidate_version=None),
        Observed(reports=pods(), alerts=[alert()]),
        Phase.SUCCEEDED,
        events=["AlertIgnored"],
        stable="v2",
        candidate=None,
    ),
    Row(
        "abort-request-rolls-back",
        S,
        in_flight(S, Phase.SHADOW),
        Observed(reports=pods(), abort_token="t1"),
        Phase.ROLLED_BACK,
        ["ManualAbort"],
        served_candidate=None,
        check={"handled_abort": "t1"},
    ),
    Row(
        "abort-token-already-handled-changes-nothing",
        S,
        in_flight(S, Phase.SHADOW, handled_abort="t1"),
        Observed(reports=pods(), abort_token="t1"),
        Phase.SHADOW,
    ),
    Row(
        "promote-request-promotes-from-shadow",
        S,
        in_flight(S, Phase.SHADOW),
        Observed(reports=pods(), promote_token="p1"),
        Phase.PROMOTING,
        ["ManualPromote"],
        stable="v2",
        candidate=None,
        served_candidate=None,
    ),
    # ---------------------------------------------------------------- spec edits
    Row(
        "model-change-mid-canary-restarts-in-shadow",
        make_spec(**{"model.version": "v3"}),
        in_flight(S, Phase.CANARY, step=1, passes=1, consecutive_failures=0),
        Observed(generation=2, reports=pods(), analysis=PASS),
        Phase.SHADOW,
        ["ModelChanged"],
        candidate="v3",
        served_candidate="v3",
        canary=0.0,
        bumped=True,
        check={"passes": 0, "step_index": None, "candidate_since": NOW},
    ),
    Row(
        "threshold-edit-mid-canary-changes-only-observed-generation",
        make_spec(**{"analysis.thresholds": {"minAgreement": 0.95}}),
        in_flight(S, Phase.CANARY, step=1, passes=0, since=NOW - timedelta(seconds=5)),
        Observed(generation=2, reports=pods()),
        Phase.CANARY,
        canary=50.0,
        bumped=False,
        check={"observed_generation": 2, "step_index": 1, "passes": 0},
    ),
    Row(
        "spec-back-to-stable-withdraws-the-candidate",
        make_spec(**{"model.version": "v1"}),
        in_flight(S, Phase.CANARY, step=0),
        Observed(reports=pods()),
        Phase.SUCCEEDED,
        ["StableRequested"],
        candidate=None,
        served_candidate=None,
        bumped=True,
    ),
    Row(
        "analysis-of-another-version-is-not-counted",
        S,
        in_flight(S, Phase.SHADOW, passes=2),
        Observed(reports=pods(), analysis=analysis(AnalysisOutcome.PASS, cand="v9")),
        Phase.SHADOW,
        check={"passes": 2, "last_analysis": None},
    ),
    Row(
        "analysis-older-than-the-last-is-not-counted",
        S,
        in_flight(S, Phase.SHADOW, passes=2, last=PASS),
        Observed(reports=pods(), analysis=PASS_EARLIER),
        Phase.SHADOW,
        check={"passes": 2},
    ),
    # ---------------------------------------------------------------- pause
    Row(
        "pause-mid-canary-freezes-serving",
        make_spec(paused=True),
        in_flight(S, Phase.CANARY, step=1),
        Observed(reports=pods(), analysis=PASS),
        Phase.PAUSED,
        ["Paused"],
        canary=50.0,
        bumped=False,
        check={"paused_phase": Phase.CANARY, "passes": 0},
    ),
    Row(
        "resume-returns-to-the-same-step",
        S,
        in_flight(S, Phase.PAUSED, step=1, paused_phase=Phase.CANARY),
        Observed(reports=pods()),
        Phase.CANARY,
        ["Resumed"],
        canary=50.0,
        bumped=False,
        check={"step_index": 1, "paused_phase": None},
    ),
    Row(
        "paused-still-rolls-back-on-alert",
        make_spec(paused=True),
        in_flight(S, Phase.PAUSED, step=1, paused_phase=Phase.CANARY),
        Observed(reports=pods(), alerts=[alert()]),
        Phase.ROLLED_BACK,
        ["AlertFiring"],
        served_candidate=None,
        bumped=True,
    ),
    Row(
        "paused-does-not-start-a-new-version",
        make_spec(paused=True, **{"model.version": "v3"}),
        in_flight(S, Phase.SUCCEEDED, stable_version="v2", candidate_version=None),
        Observed(reports=pods()),
        Phase.SUCCEEDED,
        stable="v2",
        candidate=None,
        bumped=False,
        check={"spec_vs_served": lambda d: d and "spec v3" in d[0]},
    ),
    # ---------------------------------------------------------------- quarantine
    Row(
        "quarantined-version-stays-rolled-back",
        S,
        in_flight(
            S,
            Phase.ROLLED_BACK,
            quarantined=[Quarantine(version="v2", reason="AnalysisFailed", time=T0)],
        ),
        Observed(reports=pods()),
        Phase.ROLLED_BACK,
        served_candidate=None,
        check={"spec_vs_served": lambda d: "quarantined" in d[0]},
    ),
    Row(
        "retry-lifts-the-quarantine-and-starts-over",
        make_spec(retry=1),
        in_flight(
            S,
            Phase.ROLLED_BACK,
            quarantined=[Quarantine(version="v2", reason="AnalysisFailed", time=T0)],
        ),
        Observed(reports=pods()),
        Phase.SHADOW,
        ["Retry"],
        served_candidate="v2",
        bumped=True,
    ),
    Row(
        "switching-back-to-a-quarantined-version-holds-it-back",
        S,
        in_flight(
            S,
            Phase.SHADOW,
            candidate_version="v3",
            quarantined=[Quarantine(version="v2", reason="AlertFiring", time=T0)],
        ),
        Observed(reports=pods()),
        Phase.ROLLED_BACK,
        ["Quarantined"],
        served_candidate=None,
        bumped=True,
    ),
    Row(
        "new-version-after-rollback-starts",
        make_spec(**{"model.version": "v3"}),
        in_flight(
            S,
            Phase.ROLLED_BACK,
            quarantined=[Quarantine(version="v2", reason="AlertFiring", time=T0)],
        ),
        Observed(reports=pods()),
        Phase.SHADOW,
        ["Started"],
        candidate="v3",
        served_candidate="v3",
        bumped=True,
    ),
    # ---------------------------------------------------------------- conflict
    Row(
        "another-rollout-owns-the-target",
        S,
        RolloutStatus(),
        Observed(conflict="default/other"),
        Phase.CONFLICT,
        ["TargetConflict"],
        stable=None,
        candidate=None,
        check={"serving": None},
    ),
]


def _decide(row: Row, status: RolloutStatus | None = None) -> Plan:
    return decide(row.spec, status or row.status, row.observed, NOW, rollout="default/suggest-v2")


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_decision_table(row: Row) -> None:
    plan = _decide(row)
    st = plan.status
    assert st.phase == row.phase, st.message
    assert [d.reason for d in plan.decisions] == row.reasons
    planned = [e.reason for e in plan.events]
    for reason in row.events:
        assert reason in planned
    assert st.stable_version == row.stable
    assert st.candidate_version == row.candidate
    if row.served_candidate is not False:
        assert plan.serving is not None
        assert plan.serving.candidate == row.served_candidate
        assert plan.serving.stable == row.stable or row.phase == Phase.PROMOTING
    if row.canary is not None:
        assert plan.serving is not None
        assert plan.serving.canary_percent == row.canary
        assert st.canary_percent == row.canary
    if row.bumped is not None:
        assert (st.serving_generation > row.status.serving_generation) == row.bumped
    for name, expected in row.check.items():
        actual = getattr(st, name)
        if callable(expected):
            assert expected(actual), f"{name} = {actual!r}"
        else:
            assert actual == expected, name
    if plan.serving is not None:
        assert plan.serving.generation == st.serving_generation
        assert plan.serving.rollout == "default/suggest-v2"
    assert len(st.history) <= 20


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_deciding_twice_on_the_same_observation_changes_nothing(row: Row) -> None:
    first = _decide(row)
    second = _decide(row, first.status)
    assert second.status == first.status
    assert second.decisions == ()
    assert second.serving == first.serving
    assert second.rollback_reason is None


def test_rollback_is_logged_with_reason_and_counts_once() -> None:
    row = next(r for r in ROWS if r.id == "fail-at-limit-rolls-back-and-quarantines")
    plan = _decide(row)
    assert plan.rollback_reason == "AnalysisFailed"
    assert plan.analysis_counted == AnalysisOutcome.FAIL
    entry = plan.status.history[-1]
    assert (entry.from_phase, entry.to_phase, entry.reason) == (
        "Canary",
        "RolledBack",
        "AnalysisFailed",
    )
    assert "agreement 0.500 < 0.900" in entry.message
    assert plan.events[-1].type == "Warning"


def test_history_is_bounded() -> None:
    spec = make_spec()
    status = RolloutStatus()
    for i in range(30):
        spec = make_spec(**{"model.version": f"v{i + 2}"})
        status = decide(spec, status, Observed(), NOW + timedelta(seconds=i)).status
    assert len(status.history) == 20
    assert status.history[-1].message.startswith("model changed from v30 to v31")


def test_serving_generation_never_decreases_and_continues_the_clusters() -> None:
    plan = decide(
        make_spec(),
        RolloutStatus(serving_generation=3),
        Observed(in_cluster=ServingConfig(generation=10)),
        NOW,
    )
    assert plan.status.serving_generation == 11


def test_full_rollout_walks_every_stage_to_success() -> None:
    """Shadow (3 passes) -> canary 10 -> 50 -> 100 -> promoting -> succeeded."""
    spec = make_spec()
    status = RolloutStatus()
    now = NOW
    phases: list[str] = []
    for _ in range(40):
        reports = pods(status.serving_generation)
        converged_now = True
        due = analysis_due(spec, status, now, converged_now)
        result = analysis(AnalysisOutcome.PASS, at=now) if due else None
        plan = decide(spec, status, Observed(reports=reports, analysis=result), now)
        status = plan.status
        phases.extend(d.to_phase for d in plan.decisions)
        if status.phase == Phase.SUCCEEDED:
            break
        now += timedelta(seconds=10)
    assert phases == ["Shadow", "Canary", "Canary", "Canary", "Promoting", "Succeeded"]
    assert status.stable_version == "v2"
    assert status.candidate_version is None
    assert status.serving is not None
    assert (status.serving.stable, status.serving.candidate) == ("v2", None)


def test_analysis_is_not_due_while_paused_or_unconverged() -> None:
    spec = make_spec()
    st = in_flight(spec, Phase.SHADOW)
    assert analysis_due(spec, st, NOW, True)
    assert not analysis_due(spec, st, NOW, False)
    assert not analysis_due(make_spec(paused=True), st, NOW, True)
    assert not analysis_due(spec, in_flight(spec, Phase.SUCCEEDED), NOW, True)
