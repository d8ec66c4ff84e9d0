"""The rollout decision: one pure function from what is known to what should be.

``decide(spec, status, observed, now)`` returns a :class:`Plan`: the new status (written
first, in one patch), the serving configuration that follows from it (written second), the
Events to post, and the decisions taken. It never calls an API, so every transition is a
row of a table test (``tests/unit/test_decide.py``), and a killed controller resumes from
status alone: the serving configuration is a function of (spec, status), re-applied by
every tick until the ConfigMap matches.

The order of one pass (like Argo Rollouts' rolloutContext, one reading per tick):

1. conflict: another rollout already owns the target's ConfigMap -> ``Conflict``, hands off.
2. emergencies for a candidate in flight (Shadow, Canary, Paused): a pod failed to load
   it -> ``Failed``; a new firing alert -> ``RolledBack``; a new abort token ->
   ``RolledBack``; a new promote token -> ``Promoting``. A rollback quarantines the
   candidate and returns all traffic to the stable version, or to rules when there is none.
   After a promotion (``Promoting``, then ``Succeeded`` until
   ``analysis.postPromotionWindow`` has passed) a new alert or abort rolls back to the
   version the promotion replaced (``status.promotion.previous``) and quarantines the
   promoted one.
3. pause: ``spec.paused`` freezes a rollout in flight (``Paused``); nothing new starts. A
   promotion under way still completes, and a bake window still ends.
4. version: the spec names the stable version -> ``Succeeded``; a quarantined version ->
   stays back (``RolledBack``) until ``spec.retry`` passes the quarantine's; otherwise a
   version other than the current candidate starts over in ``Shadow``.
5. progress: count a new analysis (once, by its time and version); fail or inconclusive
   limits roll back; enough passes, time and converged pods advance Shadow -> Canary
   steps -> Promoting; Promoting -> Succeeded once every pod serves the promotion.
   ``spec.canary.percent`` set to 0 mid-canary holds (never promotes on no evidence).
   A stage that runs past its least time plus ``spec.progressDeadline``: condition
   ``Progressing=False/ProgressDeadlineExceeded``, a Warning Event, and
   ``progressDeadlinePolicy`` (Hold, or Rollback).
6. stable health: a pod that reports a load error for the stable version (it serves
   rules instead): condition ``StableServing=False``, a Warning Event, a line in
   specVsServed, and no analysis passes while it lasts (the candidate would be judged
   against rules).

Worked examples (spec: shadow 100 %, 3 passes; canary steps [10, 50] up to 100 %):

- Pending, spec v2, stable v1 -> Shadow; serving {stable v1, candidate v2, shadow 100,
  canary 0}, generation 1 -> 2.
- Shadow with 2 passes, a new Pass analysis, pods converged -> 3 passes >= 3 -> Canary
  step 0 (10 %), generation + 1. The next analysis is due one interval later.
- Canary step 1 (50 %), Fail with failureLimit 1 -> RolledBack; quarantine v2 at retry 0;
  serving {stable v1}; spec.retry 0 -> 1 lifts the quarantine and v2 starts over in Shadow.
- Canary step 0, the spec now names v3 -> Shadow for v3, counters reset ("analysis
  restarts"); an edit of thresholds alone changes nothing but observedGeneration.
- Any phase, the same (spec, status, observed, now) decided twice: the second Plan's status
  equals the first's (tokens, alert fingerprints and analysis times are remembered).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from controller.model import (
    HANDLED_ALERTS_LIMIT,
    HISTORY_LIMIT,
    IN_FLIGHT,
    QUARANTINE_LIMIT,
    AnalysisOutcome,
    AnalysisResult,
    Condition,
    Decision,
    InconclusivePolicy,
    Phase,
    PodSummary,
    Promotion,
    Quarantine,
    ReceivedAlert,
    RolloutSpec,
    RolloutStatus,
    Served,
    parse_duration,
    quarantined,
)
from service.serving_config import PodReport, ServingConfig


@dataclass(frozen=True)
class Observed:
    """What the adapters saw this tick. Defaults describe a target with no pods yet."""

    generation: int | None = None
    """metadata.generation of the ModelRollout."""
    reports: Sequence[PodReport] = ()
    """Reports of live pods only (expired Leases already dropped)."""
    analysis: AnalysisResult | None = None
    alerts: Sequence[ReceivedAlert] = ()
    """Alerts matched to this rollout (status.alerts, written by the webhook)."""
    promote_token: str | None = None
    abort_token: str | None = None
    in_cluster: ServingConfig | None = None
    """The serving configuration now in the ConfigMap, if any (adopt its stable version)."""
    conflict: str | None = None
    """Another ModelRollout that owns the target's ConfigMap, as namespace/name."""


@dataclass(frozen=True)
class PlannedEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    status: RolloutStatus
    serving: ServingConfig | None
    """None: leave the ConfigMap alone (not started, or another rollout owns it)."""
    events: tuple[PlannedEvent, ...] = ()
    decisions: tuple[Decision, ...] = ()
    analysis_counted: AnalysisOutcome | None = None
    rollback_reason: str | None = None
    analysis_due: bool = False
    """Whether the next tick should run an analysis (given the new status)."""


@dataclass
class _Pass:
    spec: RolloutSpec
    st: RolloutStatus
    observed: Observed
    now: datetime
    rollout: str
    events: list[PlannedEvent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    analysis_counted: AnalysisOutcome | None = None
    rollback_reason: str | None = None

    def note(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(PlannedEvent(type_, reason, message))

    def transition(self, to: Phase, reason: str, message: str, *, warning: bool = False) -> None:
        """Move to ``to`` (or to the next step of the same phase): log, event, clock."""
        st = self.st
        decision = Decision.model_validate(
            {
                "time": self.now,
                "from": st.phase.value,
                "to": to.value,
                "reason": reason,
                "message": message,
            }
        )
        self.decisions.append(decision)
        st.history = [*st.history, decision][-HISTORY_LIMIT:]
        st.phase = to
        st.phase_since = self.now
        st.message = message
        self.note("Warning" if warning else "Normal", reason, message)

    def reset_counters(self) -> None:
        self.st.passes = 0
        self.st.consecutive_failures = 0
        self.st.consecutive_inconclusive = 0

    def roll_back(self, to: Phase, reason: str, message: str) -> None:
        """Quarantine the candidate and serve the stable version (or rules) only."""
        st = self.st
        cand = st.candidate_version
        assert cand is not None
        entry = Quarantine(
            version=cand, reason=reason, message=message, time=self.now, retry=self.spec.retry
        )
        st.quarantined = [q for q in st.quarantined if q.version != cand]
        st.quarantined = [*st.quarantined, entry][-QUARANTINE_LIMIT:]
        st.paused_phase = None
        st.step_index = None
        self.reset_counters()
        back_to = st.stable_version or "rules"
        self.transition(to, reason, f"{message}; all traffic back to {back_to}", warning=True)
        self.rollback_reason = reason

    def roll_back_promotion(self, reason: str, message: str) -> None:
        """Undo the promotion in ``status.promotion``: its previous version serves again."""
        st = self.st
        promo = st.promotion
        assert promo is not None
        promoted = promo.version
        entry = Quarantine(
            version=promoted, reason=reason, message=message, time=self.now, retry=self.spec.retry
        )
        st.quarantined = [q for q in st.quarantined if q.version != promoted]
        st.quarantined = [*st.quarantined, entry][-QUARANTINE_LIMIT:]
        st.stable_version = promo.previous
        st.candidate_version = promoted
        st.promotion = None
        st.paused_phase = None
        st.step_index = None
        self.reset_counters()
        ago = (self.now - promo.time).total_seconds()
        self.transition(
            Phase.ROLLED_BACK,
            reason,
            f"{message} after the promotion of {promoted} ({ago:.0f}s ago); all traffic back "
            f"to {promo.previous or 'rules'}",
            warning=True,
        )
        self.rollback_reason = reason

    def promote(self, reason: str, message: str) -> None:
        st = self.st
        cand = st.candidate_version
        assert cand is not None
        previous = st.stable_version or "rules"
        st.promotion = Promotion(version=cand, previous=st.stable_version, time=self.now)
        st.stable_version = cand
        st.candidate_version = None
        st.step_index = None
        st.paused_phase = None
        self.reset_counters()
        self.transition(Phase.PROMOTING, reason, f"{message}; {cand} replaces {previous}")


def converged(reports: Sequence[PodReport], generation: int) -> bool:
    """Every live pod serves ``generation`` or later (vacuously true with no pods)."""
    return all(r.generation >= generation for r in reports)


def analysis_due(
    spec: RolloutSpec, status: RolloutStatus, now: datetime, is_converged: bool
) -> bool:
    """Whether an analysis should run now: in Shadow or Canary, not paused, pods converged,
    and one interval since both the stage began and the last analysis.

    >>> from datetime import UTC, timedelta
    >>> from controller.model import ModelRef
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> spec = RolloutSpec(target="suggest", model=ModelRef(version="v2"))
    >>> st = RolloutStatus(phase=Phase.SHADOW, candidate_version="v2", phase_since=t0)
    >>> analysis_due(spec, st, t0 + timedelta(seconds=9), True)
    False
    >>> analysis_due(spec, st, t0 + timedelta(seconds=10), True)
    True
    """
    if status.phase not in (Phase.SHADOW, Phase.CANARY) or spec.paused or not is_converged:
        return False
    since = status.phase_since
    if status.last_analysis is not None and (since is None or status.last_analysis.time > since):
        since = status.last_analysis.time
    return since is None or now - since >= parse_duration(spec.analysis.interval)


def served_for(spec: RolloutSpec, status: RolloutStatus) -> Served | None:
    """The serving content that follows from (spec, status); None before anything started.

    >>> from controller.model import ModelRef
    >>> spec = RolloutSpec(target="suggest", model=ModelRef(version="v2"))
    >>> st = RolloutStatus(phase=Phase.SHADOW, stable_version="v1", candidate_version="v2")
    >>> served_for(spec, st).model_dump(include={"stable", "candidate", "shadow_percent"})
    {'stable': 'v1', 'candidate': 'v2', 'shadow_percent': 100.0}
    """
    phase = status.paused_phase if status.phase == Phase.PAUSED else status.phase
    if phase in (None, Phase.PENDING, Phase.CONFLICT):
        return None
    cand = status.candidate_version
    common = {
        "stable": status.stable_version,
        "min_confidence": spec.min_confidence,
        "top_k": spec.top_k,
        "salt": f"modelrollout/{cand}" if cand else "modelrollout",
    }
    if phase == Phase.SHADOW and cand:
        return Served(candidate=cand, shadow_percent=spec.shadow.percent, **common)
    if phase == Phase.CANARY and cand:
        steps = spec.canary.effective_steps()
        pct = steps[min(status.step_index or 0, len(steps) - 1)] if steps else 0.0
        return Served(
            candidate=cand, shadow_percent=spec.shadow.percent, canary_percent=pct, **common
        )
    common["salt"] = "modelrollout"
    return Served(**common)


def _set_condition(
    st: RolloutStatus,
    type_: str,
    *,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    now: datetime,
) -> None:
    """Upsert a condition; lastTransitionTime moves only when its status changes."""
    old = next((c for c in st.conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_, status=status, reason=reason, message=message, last_transition_time=since
    )
    st.conditions = [c for c in st.conditions if c.type != type_] + [new]
    st.conditions.sort(key=lambda c: c.type)


def decide(
    spec: RolloutSpec,
    status: RolloutStatus,
    observed: Observed,
    now: datetime,
    *,
    rollout: str = "",
) -> Plan:
    """The next status and serving configuration of one ModelRollout (see module doc)."""
    p = _Pass(spec, status.model_copy(deep=True), observed, now, rollout)
    st = p.st
    if observed.generation is not None:
        st.observed_generation = observed.generation
    was_converged = converged(observed.reports, st.serving_generation)

    if observed.conflict is not None:
        if st.phase != Phase.CONFLICT:
            p.transition(
                Phase.CONFLICT,
                "TargetConflict",
                f"target {spec.target!r} is already managed by ModelRollout {observed.conflict}",
                warning=True,
            )
        return _finish(p, serving_allowed=False)
    if st.phase == Phase.CONFLICT:
        p.transition(Phase.PENDING, "ConflictResolved", "the target is free again")

    emergency = _emergencies(p)
    if not emergency:
        if spec.paused:
            if st.phase in (Phase.SHADOW, Phase.CANARY):
                st.paused_phase = st.phase
                p.transition(Phase.PAUSED, "Paused", f"rollout of {st.candidate_version} paused")
            _settle_promotion(p, was_converged)
        else:
            if st.phase == Phase.PAUSED:
                resumed = st.paused_phase or Phase.SHADOW
                st.paused_phase = None
                p.transition(resumed, "Resumed", f"rollout of {st.candidate_version} resumed")
            _select_version(p)
            _progress(p, was_converged)
    return _finish(p, serving_allowed=True)


def _emergencies(p: _Pass) -> bool:
    """Load errors, alerts and manual tokens; True when one of them moved the phase."""
    st, obs = p.st, p.observed
    cand = st.candidate_version
    in_flight = st.phase in IN_FLIGHT and cand is not None
    baking = _baking(p)

    new_alerts = [a for a in obs.alerts if a.key not in st.handled_alerts]
    if new_alerts:
        handled = st.handled_alerts + [a.key for a in new_alerts]
        st.handled_alerts = handled[-HANDLED_ALERTS_LIMIT:]
    abort = obs.abort_token if obs.abort_token and obs.abort_token != st.handled_abort else None
    promote = (
        obs.promote_token if obs.promote_token and obs.promote_token != st.handled_promote else None
    )
    if abort:
        st.handled_abort = abort
    if promote:
        st.handled_promote = promote

    if baking and (new_alerts or abort):
        if new_alerts:
            names = ", ".join(sorted({a.alertname or a.fingerprint for a in new_alerts}))
            p.roll_back_promotion("AlertFiring", f"alert firing: {names}")
        else:
            p.roll_back_promotion("ManualAbort", "aborted by request")
        return True
    if not in_flight:
        for a in new_alerts:
            p.note(
                "Normal",
                "AlertIgnored",
                f"alert {a.alertname or a.fingerprint}: no candidate in flight",
            )
        if abort:
            p.note("Normal", "AbortIgnored", "abort requested with no candidate in flight")
        if promote:
            p.note("Normal", "PromoteIgnored", "promote requested with no candidate in flight")
        return False

    assert cand is not None
    errors = [
        (r.pod, r.load_errors[cand])
        for r in obs.reports
        if cand in r.load_errors
        and (st.candidate_generation is None or r.generation >= st.candidate_generation)
    ]
    if errors:
        pod, why = errors[0]
        p.roll_back(Phase.FAILED, "LoadError", f"pod {pod} cannot load {cand}: {why}")
        return True
    if new_alerts:
        names = ", ".join(sorted({a.alertname or a.fingerprint for a in new_alerts}))
        p.roll_back(Phase.ROLLED_BACK, "AlertFiring", f"alert firing: {names}")
        return True
    if abort:
        p.roll_back(Phase.ROLLED_BACK, "ManualAbort", f"rollout of {cand} aborted by request")
        return True
    if promote:
        p.promote("ManualPromote", "promoted by request")
        return True
    return False


def _baking(p: _Pass) -> bool:
    """Whether the last promotion can still be rolled back: Promoting, or Succeeded within
    ``analysis.postPromotionWindow`` of the promoted version serving all traffic."""
    st = p.st
    promo = st.promotion
    if promo is None or st.stable_version != promo.version:
        return False
    if st.phase == Phase.PROMOTING:
        return True
    window = parse_duration(p.spec.analysis.post_promotion_window)
    return st.phase == Phase.SUCCEEDED and p.now - promo.time < window


def _settle_promotion(p: _Pass, was_converged: bool) -> None:
    """Promoting -> Succeeded once the pods serve it; the bake window's end. Runs paused too."""
    st = p.st
    if st.phase == Phase.PROMOTING:
        if was_converged:
            p.transition(
                Phase.SUCCEEDED, "Promoted", f"{st.stable_version} serves all traffic as stable"
            )
            if st.promotion is not None:
                # The bake window runs from when the promoted version serves everything.
                st.promotion = st.promotion.model_copy(update={"time": p.now})
        return
    promo = st.promotion
    if promo is not None and not _baking(p):
        st.promotion = None
        if st.phase == Phase.SUCCEEDED and st.stable_version == promo.version:
            p.note(
                "Normal",
                "PromotionBaked",
                f"{promo.version} served {p.spec.analysis.post_promotion_window} after its "
                f"promotion with no alert: {promo.previous or 'rules'} is no longer the "
                "rollback target",
            )


def _select_version(p: _Pass) -> None:
    """Start, restart, or hold back the version the spec names."""
    spec, st, obs = p.spec, p.st, p.observed
    want = spec.model.version

    if st.phase == Phase.PENDING and st.stable_version is None and obs.in_cluster is not None:
        # Adopt what the target serves now as the known-good version.
        st.stable_version = obs.in_cluster.stable

    if want == st.stable_version:
        if st.phase not in (Phase.SUCCEEDED, Phase.PROMOTING):
            withdrawn = st.candidate_version if st.phase in IN_FLIGHT else None
            st.candidate_version = None
            st.step_index = None
            p.reset_counters()
            msg = f"{want} is the stable version and serves all traffic"
            if withdrawn:
                msg += f"; candidate {withdrawn} withdrawn"
            p.transition(Phase.SUCCEEDED, "StableRequested", msg)
        return

    held = quarantined(st, want, spec.retry)
    if held is not None:
        if st.phase in (Phase.ROLLED_BACK, Phase.FAILED) and st.candidate_version == want:
            return
        st.candidate_version = want
        st.step_index = None
        p.reset_counters()
        p.transition(
            Phase.ROLLED_BACK,
            "Quarantined",
            f"{want} is quarantined ({held.reason}): raise spec.retry above {held.retry} "
            "to try it again",
            warning=True,
        )
        return

    restart = st.candidate_version != want or st.phase in (
        Phase.PENDING,
        Phase.SUCCEEDED,
        Phase.ROLLED_BACK,
        Phase.FAILED,
    )
    if not restart:
        return
    if st.phase in IN_FLIGHT and st.candidate_version not in (None, want):
        reason, msg = "ModelChanged", f"model changed from {st.candidate_version} to {want}"
    elif st.phase in (Phase.ROLLED_BACK, Phase.FAILED) and st.candidate_version == want:
        reason, msg = "Retry", f"retrying {want} (spec.retry {spec.retry})"
    else:
        reason, msg = "Started", f"rolling out {want}"
    st.candidate_version = want
    st.candidate_since = p.now
    st.candidate_generation = None
    st.promotion = None  # the new candidate's rollback target is the current stable
    st.step_index = None
    st.paused_phase = None
    p.reset_counters()
    p.transition(
        Phase.SHADOW,
        reason,
        f"{msg} against {st.stable_version or 'rules'}: shadow {spec.shadow.percent:g}%",
    )


def _progress(p: _Pass, was_converged: bool) -> None:
    spec, st, now = p.spec, p.st, p.now
    if st.phase in (Phase.PROMOTING, Phase.SUCCEEDED):
        promoting = st.phase == Phase.PROMOTING
        _settle_promotion(p, was_converged)
        if promoting and st.phase == Phase.PROMOTING:
            _check_deadline(p)
        return
    if st.phase not in (Phase.SHADOW, Phase.CANARY):
        return

    if st.phase == Phase.CANARY:
        # Steps may have been shortened in the spec: stay within them.
        steps = spec.canary.effective_steps()
        st.step_index = min(st.step_index or 0, max(len(steps) - 1, 0))
    if _count_analysis(p):
        return
    if _check_deadline(p):
        return

    if not was_converged or st.phase_since is None:
        return
    last = st.last_analysis
    if last is None or last.outcome != AnalysisOutcome.PASS or last.time < st.phase_since:
        # Only a pass at this stage moves a rollout: never an inconclusive one.
        return
    in_stage = now - st.phase_since
    if st.phase == Phase.SHADOW:
        if st.passes < spec.shadow.passes or in_stage < parse_duration(spec.shadow.duration):
            return
        steps = spec.canary.effective_steps()
        if steps:
            st.step_index = 0
            p.reset_counters()
            p.transition(
                Phase.CANARY,
                "ShadowPassed",
                f"shadow analysis passed {spec.shadow.passes}x; canary {steps[0]:g}%",
            )
        else:
            _finish_stages(p, "ShadowPassed", "shadow analysis passed; no canary")
        return

    steps = spec.canary.effective_steps()
    if not steps:
        # canary.percent set to 0 mid-canary: no canary traffic, and no evidence at the
        # stage the spec now describes, so hold (never promote on it).
        held = "holding: spec.canary.percent is 0 mid-canary; raise it to go on, or annotate"
        if not st.message.startswith(held):
            st.message = f"{held} to promote"
            p.note("Warning", "CanaryHeld", st.message)
        return
    idx = st.step_index or 0
    if st.passes < spec.canary.passes_per_step or in_stage < parse_duration(
        spec.canary.step_interval
    ):
        return
    if idx + 1 < len(steps):
        st.step_index = idx + 1
        p.reset_counters()
        p.transition(
            Phase.CANARY,
            "StepAdvanced",
            f"canary {steps[idx]:g}% passed; canary {steps[idx + 1]:g}% "
            f"(step {idx + 2} of {len(steps)})",
        )
    else:
        _finish_stages(p, "CanaryPassed", f"canary {steps[idx]:g}% passed")


def _finish_stages(p: _Pass, reason: str, message: str) -> None:
    if p.spec.auto_promote:
        p.promote(reason, message)
    elif not p.st.message.startswith("awaiting"):
        p.st.message = f"awaiting promotion ({message}): annotate to promote"
        p.note("Normal", "AwaitingPromotion", p.st.message)


def _count_analysis(p: _Pass) -> bool:
    """Count a new analysis once; True when it rolled the rollout back."""
    spec, st, a = p.spec, p.st, p.observed.analysis
    if a is None or a.candidate != st.candidate_version:
        return False
    if st.last_analysis is not None and a.time <= st.last_analysis.time:
        return False
    if st.phase_since is not None and a.time < st.phase_since:
        return False
    broken = _stable_broken(p)
    if broken and a.outcome == AnalysisOutcome.PASS:
        a = a.model_copy(
            update={
                "outcome": AnalysisOutcome.INCONCLUSIVE,
                "reasons": [f"{broken}: the candidate was compared with rules"],
            }
        )
    st.last_analysis = a
    p.analysis_counted = a.outcome
    reasons = "; ".join(a.reasons)
    if a.outcome == AnalysisOutcome.PASS:
        st.passes += 1
        st.consecutive_failures = 0
        st.consecutive_inconclusive = 0
        return False
    if a.outcome == AnalysisOutcome.FAIL:
        st.consecutive_failures += 1
        st.consecutive_inconclusive = 0
        st.passes = 0
        limit = spec.analysis.failure_limit
        if st.consecutive_failures >= limit:
            p.roll_back(Phase.ROLLED_BACK, "AnalysisFailed", f"analysis failed: {reasons}")
            return True
        p.note(
            "Warning",
            "AnalysisFailed",
            f"analysis failed ({st.consecutive_failures}/{limit}): {reasons}",
        )
        return False
    st.consecutive_inconclusive += 1
    st.passes = 0  # "consecutive" passes: an inconclusive analysis breaks the run
    limit = spec.analysis.inconclusive_limit
    if st.consecutive_inconclusive >= limit:
        if spec.analysis.inconclusive_policy == InconclusivePolicy.ROLLBACK:
            p.roll_back(
                Phase.ROLLED_BACK,
                "Inconclusive",
                f"{st.consecutive_inconclusive} inconclusive analyses: {reasons}",
            )
            return True
        if st.consecutive_inconclusive == limit:
            st.message = f"holding: {limit} inconclusive analyses ({reasons})"
            p.note("Warning", "AnalysisHeld", st.message)
    return False


def _stable_broken(p: _Pass) -> str | None:
    """Why the stable version does not serve on some live pod (it serves rules), or None."""
    stable = p.st.stable_version
    if stable is None:
        return None
    for r in p.observed.reports:
        why = r.load_errors.get(stable)
        if why is not None:
            return f"pod {r.pod} cannot load stable {stable} ({why}); it serves rules"
    return None


def _deadline_exceeded(p: _Pass) -> str | None:
    """The message when the current stage has overrun its progress deadline, else None."""
    spec, st = p.spec, p.st
    deadline = parse_duration(spec.progress_deadline)
    if deadline.total_seconds() <= 0 or spec.paused or st.phase_since is None:
        return None
    if st.phase == Phase.SHADOW:
        least = parse_duration(spec.shadow.duration)
    elif st.phase == Phase.CANARY:
        least = parse_duration(spec.canary.step_interval)
    elif st.phase == Phase.PROMOTING:
        least = parse_duration("0s")
    else:
        return None
    if not spec.auto_promote and st.message.startswith("awaiting promotion"):
        return None  # waiting for a person is not a lack of progress
    ran = p.now - st.phase_since
    if ran <= least + deadline:
        return None
    return (
        f"no progress in {st.phase.value} for {ran.total_seconds():.0f}s "
        f"(progressDeadline {spec.progress_deadline} beyond the stage's least time)"
    )


def _check_deadline(p: _Pass) -> bool:
    """Apply progressDeadlinePolicy once the deadline is exceeded; True when rolled back."""
    message = _deadline_exceeded(p)
    if message is None:
        return False
    st = p.st
    if p.spec.progress_deadline_policy == InconclusivePolicy.ROLLBACK:
        if st.phase == Phase.PROMOTING and st.promotion is not None:
            p.roll_back_promotion("ProgressDeadlineExceeded", message)
        elif st.candidate_version is not None and st.phase != Phase.PROMOTING:
            p.roll_back(Phase.ROLLED_BACK, "ProgressDeadlineExceeded", message)
        else:
            return False
        return True
    old = next((c for c in st.conditions if c.type == "Progressing"), None)
    if old is None or old.reason != "ProgressDeadlineExceeded":
        p.note("Warning", "ProgressDeadlineExceeded", f"{message}; holding")
    return False


def _finish(p: _Pass, *, serving_allowed: bool) -> Plan:
    spec, st, obs, now = p.spec, p.st, p.observed, p.now
    served = served_for(spec, st) if serving_allowed else None
    if served is not None and served != st.serving:
        in_cluster = obs.in_cluster.generation if obs.in_cluster is not None else 0
        st.serving_generation = max(st.serving_generation, in_cluster) + 1
        if served.candidate and (st.serving is None or st.serving.candidate != served.candidate):
            st.candidate_generation = st.serving_generation
        st.serving = served
    if st.serving is not None:
        st.shadow_percent = st.serving.shadow_percent
        st.canary_percent = st.serving.canary_percent

    reports = obs.reports
    done = sum(1 for r in reports if r.generation >= st.serving_generation)
    st.pods = PodSummary(live=len(reports), converged=done)
    is_converged = done == len(reports)
    _conditions(p, is_converged)
    st.spec_vs_served = _spec_vs_served(spec, st, reports)

    serving = None
    if served is not None:
        serving = ServingConfig(
            rollout=p.rollout or None,
            generation=st.serving_generation,
            stable=served.stable,
            candidate=served.candidate,
            shadow_percent=served.shadow_percent,
            canary_percent=served.canary_percent,
            min_confidence=served.min_confidence,
            top_k=served.top_k,
            salt=served.salt,
        )
    return Plan(
        status=st,
        serving=serving,
        events=tuple(p.events),
        decisions=tuple(p.decisions),
        analysis_counted=p.analysis_counted,
        rollback_reason=p.rollback_reason,
        analysis_due=analysis_due(spec, st, now, is_converged),
    )


def _conditions(p: _Pass, is_converged: bool) -> None:
    spec, st, now = p.spec, p.st, p.now
    pods = st.pods
    _set_condition(
        st,
        "Converged",
        status="True" if is_converged else "False",
        reason="AllPodsServing" if is_converged else "Converging",
        message=f"{pods.converged}/{pods.live} live pods serve generation {st.serving_generation}",
        now=now,
    )
    progressing = st.phase in (Phase.SHADOW, Phase.CANARY, Phase.PROMOTING)
    overrun = _deadline_exceeded(p)
    _set_condition(
        st,
        "Progressing",
        status="True" if progressing and overrun is None else "False",
        reason=st.phase.value if overrun is None else "ProgressDeadlineExceeded",
        message=st.message if overrun is None else overrun,
        now=now,
    )
    broken = _stable_broken(p)
    old = next((c for c in st.conditions if c.type == "StableServing"), None)
    if broken is not None and (old is None or old.status != "False"):
        p.note("Warning", "StableNotServing", broken)
    if broken is not None or old is not None:
        _set_condition(
            st,
            "StableServing",
            status="False" if broken else "True",
            reason="StableLoadError" if broken else "StableLoaded",
            message=broken or f"{st.stable_version or 'rules'} serves on every live pod",
            now=now,
        )
    _set_condition(
        st,
        "Paused",
        status="True" if spec.paused else "False",
        reason="Spec" if spec.paused else "NotPaused",
        message="spec.paused is true" if spec.paused else "",
        now=now,
    )
    a = st.last_analysis
    if a is not None:
        mapping: dict[AnalysisOutcome, Literal["True", "False", "Unknown"]] = {
            AnalysisOutcome.PASS: "True",
            AnalysisOutcome.FAIL: "False",
            AnalysisOutcome.INCONCLUSIVE: "Unknown",
        }
        _set_condition(
            st,
            "AnalysisPassing",
            status=mapping[a.outcome],
            reason=a.outcome.value,
            message="; ".join(a.reasons),
            now=now,
        )


def _spec_vs_served(
    spec: RolloutSpec, st: RolloutStatus, reports: Sequence[PodReport] = ()
) -> list[str]:
    """Human-readable differences between what the spec asks and what is served."""
    want = spec.model.version
    served = st.serving
    if served is None:
        return [f"spec asks for {want}; nothing served by this rollout yet ({st.phase.value})"]
    out: list[str] = []
    stable = served.stable or "rules"
    broken = [r.pod for r in reports if served.stable and served.stable in r.load_errors]
    if broken:
        out.append(f"stable {served.stable}: not loaded on {', '.join(broken)} (serving rules)")
    if want not in (served.stable, served.candidate):
        why = {
            Phase.ROLLED_BACK: "rolled back",
            Phase.FAILED: "failed to load",
            Phase.PAUSED: "paused",
        }.get(st.phase, st.phase.value.lower())
        held = quarantined(st, want, spec.retry)
        if held is not None:
            why = f"quarantined: {held.reason}"
        out.append(f"model: spec {want}, served {stable} ({why})")
    if served.candidate is not None:
        out.append(
            f"candidate {served.candidate}: shadow {served.shadow_percent:g}%, "
            f"canary {served.canary_percent:g}% of {spec.canary.percent:g}%"
        )
    return out
