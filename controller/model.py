"""Typed ModelRollout spec and status: the boundary between Kubernetes dicts and the core.

The CRD (``crds/modelrollout.io_modelrollouts.yaml``) validates at admission; these models
validate again where a dict enters the controller, so the decision core only sees typed,
defaulted values. Field names are the CRD's camelCase through aliases; defaults mirror
the CRD's, so a spec written before a default existed parses the same way.

Pure: pydantic only, no Kubernetes imports.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from service.serving_config import ModelVersion, Percent

GROUP: Final = "modelrollout.io"
VERSION: Final = "v1alpha1"
KIND: Final = "ModelRollout"
PLURAL: Final = "modelrollouts"
API_VERSION: Final = f"{GROUP}/{VERSION}"

PROMOTE_ANNOTATION: Final = f"{GROUP}/promote"
"""Set to any new token (the plugin uses a timestamp) to promote the candidate now."""
ABORT_ANNOTATION: Final = f"{GROUP}/abort"
"""Set to any new token to abort the rollout: roll back and quarantine the candidate."""
DEFAULT_ALERT_LABEL: Final = "modelrollout"
"""An alert labelled ``modelrollout=<name>`` matches the rollout of that name."""

HISTORY_LIMIT: Final = 20
QUARANTINE_LIMIT: Final = 20
ALERTS_LIMIT: Final = 20
HANDLED_ALERTS_LIMIT: Final = 50

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """A Go-style duration (``"90s"``, ``"1m30s"``, ``"500ms"``, ``"2h"``) as a timedelta.

    >>> parse_duration("1m30s")
    datetime.timedelta(seconds=90)
    """
    if not _DURATION_RE.match(text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 500ms, 10s, 1m30s, 2h")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART_RE.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest Go-style string for a whole number of seconds (or milliseconds).

    >>> format_duration(timedelta(seconds=90))
    '90s'
    """
    ms = round(delta.total_seconds() * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The CRD's JSON form: camelCase, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Duration = Annotated[str, Field(pattern=_DURATION_RE.pattern)]


# ----------------------------------------------------------------------------- spec


class ModelRef(_Camel):
    version: ModelVersion


class ShadowSpec(_Camel):
    percent: Percent = 100.0
    duration: Duration = "0s"
    """Least time in shadow before the canary may start."""
    passes: int = Field(default=3, ge=1, le=1000)
    """Consecutive passing analyses in shadow needed before the canary."""


class CanarySpec(_Camel):
    percent: Percent = 100.0
    steps: list[Annotated[float, Field(gt=0.0, le=100.0)]] = Field(
        default_factory=list, max_length=20
    )
    step_interval: Duration = "30s"
    """Least time at each canary step (after the pods converged) before the next."""
    passes_per_step: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _steps_increase(self) -> Self:
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"canary.steps must be strictly increasing: {self.steps}")
        if self.steps and self.steps[-1] > self.percent:
            raise ValueError(
                f"canary.steps must not exceed canary.percent {self.percent}: {self.steps}"
            )
        return self

    def effective_steps(self) -> list[float]:
        """The canary percents walked in order, ending at ``percent``; empty: no canary.

        >>> CanarySpec(percent=50, steps=[5, 20]).effective_steps()
        [5.0, 20.0, 50.0]
        >>> CanarySpec(percent=0).effective_steps()
        []
        """
        if self.percent <= 0:
            return []
        steps = list(self.steps)
        if not steps or steps[-1] < self.percent:
            steps.append(self.percent)
        return steps


class Thresholds(_Camel):
    """What one analysis must meet. On by default: overall agreement, agreement in every
    category with enough comparisons, the candidate's latency relative to stable's in the
    same window, and the error rate (docs/decisions/0010-analysis-scoping-and-gates.md)."""

    min_agreement: float | None = Field(default=0.9, ge=0.0, le=1.0)
    min_category_agreement: float | None = Field(default=0.7, ge=0.0, le=1.0)
    """Least agreement in any one category (labelled by the reference answer, what stable
    or rules said), among categories with at least ``min_category_samples`` comparisons."""
    min_category_samples: int = Field(default=50, ge=1)
    latency_quantile: float = Field(default=0.95, ge=0.5, le=0.999)
    """The quantile of the candidate's evaluation time that the latency bounds judge."""
    max_latency_seconds: float | None = Field(default=None, gt=0.0)
    """Absolute bound on the candidate's latency at ``latency_quantile``."""
    max_latency_p95_seconds: float | None = Field(default=None, gt=0.0)
    """Older name of ``max_latency_seconds`` (used when that is unset)."""
    max_latency_ratio: float | None = Field(default=1.5, ge=1.0)
    """Bound relative to stable: the candidate's latency at ``latency_quantile`` when it
    answers users must not exceed ``max_latency_ratio`` x stable's in the same window +
    ``latency_allowance_seconds`` (judged with a stable model and ``min_latency_samples``
    served candidate evaluations, so in canary)."""
    latency_allowance_seconds: float = Field(default=0.002, ge=0.0)
    min_latency_samples: int = Field(default=20, ge=1)
    """Least served candidate evaluations in the window for the relative bound to be
    judged at all; beyond it the bound is a test, not a reading (see ``controller.analysis``)."""
    max_error_rate: float | None = Field(default=0.01, ge=0.0, le=1.0)
    """Most share of candidate evaluations that raise; fewer than ``analysis.minSamples``
    evaluations count as ``minSamples`` (one error in 50 is not a 2% error rate)."""
    min_feedback_acceptance_ratio: float | None = Field(default=None, ge=0.0)
    """Candidate acceptance / stable acceptance; judged only with enough feedback."""
    min_feedback_samples: int = Field(default=20, ge=1)

    @property
    def latency_bound(self) -> float | None:
        """The absolute latency bound (``maxLatencySeconds``, else ``maxLatencyP95Seconds``)."""
        return (
            self.max_latency_seconds
            if self.max_latency_seconds is not None
            else (self.max_latency_p95_seconds)
        )


class CustomCheck(_Camel):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z][a-zA-Z0-9_-]{0,62}$")]
    query: Annotated[str, Field(min_length=1, max_length=4096)]
    """PromQL returning one sample; ``{{candidate}}``, ``{{stable}}``, ``{{window}}``."""
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError(f"custom check {self.name!r} needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"custom check {self.name!r}: min {self.min} > max {self.max}")
        return self


class InconclusivePolicy(StrEnum):
    HOLD = "Hold"
    ROLLBACK = "Rollback"


class AnalysisSpec(_Camel):
    prometheus_url: str | None = Field(
        default=None, alias="prometheusURL", pattern=r"^https?://", max_length=2048
    )
    interval: Duration = "10s"
    window: Duration = "1m"
    min_samples: int = Field(default=100, ge=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    failure_limit: int = Field(default=1, ge=1, le=100)
    inconclusive_limit: int = Field(default=3, ge=1, le=1000)
    inconclusive_policy: InconclusivePolicy = InconclusivePolicy.HOLD
    post_promotion_window: Duration = "5m"
    """Bake time after promotion: an alert or abort inside it rolls back to the previous
    stable version. Alert rules usually fire 30 s to minutes after the harm begins (their
    ``for:``), so without it an alert that fires just after the last step is lost."""
    label_selector: dict[str, str] = Field(default_factory=dict)
    """Extra label matchers on every query (e.g. ``namespace``, ``job``)."""
    custom_checks: list[CustomCheck] = Field(default_factory=list, max_length=10)
    target: str | None = Field(default=None, exclude=True)
    """The rollout's ``spec.target``, copied here when the spec is parsed (not a field of
    the CRD): every query of the analysis selects it (``target`` label)."""

    @model_validator(mode="after")
    def _window_covers_interval(self) -> Self:
        if parse_duration(self.window) < parse_duration(self.interval):
            raise ValueError(f"analysis.window {self.window} < analysis.interval {self.interval}")
        if parse_duration(self.interval) < timedelta(seconds=1):
            raise ValueError(f"analysis.interval {self.interval} is below 1s")
        return self


class AlertsSpec(_Camel):
    enabled: bool = True
    match_labels: dict[str, str] = Field(default_factory=dict)


class RolloutSpec(_Camel):
    target: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")]
    model: ModelRef
    shadow: ShadowSpec = Field(default_factory=ShadowSpec)
    canary: CanarySpec = Field(default_factory=CanarySpec)
    auto_promote: bool = True
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    progress_deadline: Duration = "10m"
    """How long a stage may run beyond its least time without progressing (0s: never)."""
    progress_deadline_policy: InconclusivePolicy = InconclusivePolicy.HOLD
    paused: bool = False
    retry: int = Field(default=0, ge=0)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    top_k: int = Field(default=3, ge=1, le=20)

    @model_validator(mode="before")
    @classmethod
    def _analysis_knows_its_target(cls, data: Any) -> Any:
        """Scope the analysis to ``target`` (issue 12: rollouts must not judge each other)."""
        if not isinstance(data, dict) or not isinstance(data.get("target"), str):
            return data
        analysis = data.get("analysis")
        if isinstance(analysis, AnalysisSpec):
            analysis = analysis.model_dump(by_alias=True, exclude_none=True)
        if analysis is None:
            analysis = {}
        if isinstance(analysis, dict):
            return {**data, "analysis": {**analysis, "target": data["target"]}}
        return data


class SpecError(ValueError):
    """A spec the controller cannot act on; the message says which field and why."""


def parse_spec(raw: dict[str, Any]) -> RolloutSpec:
    """Validate a spec dict (as the API server returns it) into :class:`RolloutSpec`."""
    try:
        return RolloutSpec.model_validate(raw)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "spec"
            parts.append(f"spec.{loc}: {err['msg']}")
        raise SpecError("; ".join(parts)) from exc


# ----------------------------------------------------------------------------- status


class Phase(StrEnum):
    PENDING = "Pending"
    SHADOW = "Shadow"
    CANARY = "Canary"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    PAUSED = "Paused"
    CONFLICT = "Conflict"


IN_FLIGHT: Final = frozenset({Phase.SHADOW, Phase.CANARY, Phase.PAUSED})
"""Phases in which a candidate is being evaluated (and can be rolled back)."""


class AnalysisOutcome(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class Figures(_Camel):
    """What one analysis measured for the candidate (None: not measured / no data)."""

    samples: float | None = None
    agreement: float | None = None
    worst_category: str | None = None
    worst_category_agreement: float | None = None
    latency_quantile: float | None = None
    """The quantile that ``latency_seconds`` and ``stable_latency_seconds`` are."""
    latency_seconds: float | None = None
    """The candidate's, over every evaluation (shadow groups included: an upper bound)."""
    served_latency_seconds: float | None = None
    """The candidate's, over evaluations that answered users (canary)."""
    served_evaluations: float | None = None
    served_latency_buckets: tuple[tuple[float, float], ...] | None = Field(
        default=None, exclude=True
    )
    """The candidate's served evaluations in the window as cumulative histogram counts,
    ``(upper bound, evaluations at most that slow)`` by ascending bound, ``inf`` last.
    What the relative latency bound counts; not shown in status."""
    stable_latency_seconds: float | None = None
    """Stable's, over evaluations that answered users, in the same window."""
    errors: float | None = None
    error_rate: float | None = None
    evaluations: float | None = None
    feedback_samples: float | None = None
    feedback_acceptance_ratio: float | None = None
    clear_category: str | None = None
    """A category with fewer than ``minCategorySamples`` comparisons whose agreement is
    already clearly low (its 3-sigma Wilson upper bound, ``clear_category_bound``, is the
    lowest of those categories): few comparisons, but all or nearly all disagreeing."""
    clear_category_agreement: float | None = None
    clear_category_samples: float | None = None
    clear_category_bound: float | None = None
    custom: dict[str, float] = Field(default_factory=dict)

    @field_serializer(
        "agreement",
        "worst_category_agreement",
        "error_rate",
        "feedback_acceptance_ratio",
        "clear_category_agreement",
        "clear_category_bound",
    )
    def _ratio(self, value: float | None) -> float | None:
        """Status shows ratios to 4 decimals (``kubectl get mro``'s AGREEMENT column);
        decisions use the unrounded figures."""
        return None if value is None else round(value, 4)

    @field_serializer("latency_seconds", "served_latency_seconds", "stable_latency_seconds")
    def _seconds(self, value: float | None) -> float | None:
        return None if value is None else round(value, 6)


class AnalysisResult(_Camel):
    time: datetime
    candidate: str | None = None
    """The version analysed: a result for another version is never counted."""
    outcome: AnalysisOutcome
    reasons: list[str] = Field(default_factory=list)
    figures: Figures = Field(default_factory=Figures)
    window: str | None = None


class Decision(_Camel):
    """One entry of the decision log."""

    time: datetime
    from_phase: str = Field(alias="from")
    to_phase: str = Field(alias="to")
    reason: str
    message: str = ""


class Quarantine(_Camel):
    version: ModelVersion
    reason: str
    message: str = ""
    time: datetime
    retry: int = 0
    """spec.retry when quarantined: bumping spec.retry past it lifts the quarantine."""


class ReceivedAlert(_Camel):
    """An Alertmanager alert matched to this rollout, written into status by the webhook."""

    fingerprint: str
    starts_at: str = ""
    alertname: str = ""
    summary: str = ""
    received: datetime

    @property
    def key(self) -> str:
        return f"{self.fingerprint}@{self.starts_at}"


class Promotion(_Camel):
    """The last promotion, kept (with the version it replaced) through the bake window."""

    version: ModelVersion
    previous: ModelVersion | None = None
    """The stable version before the promotion; None: rules."""
    time: datetime


class Condition(_Camel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime


class Served(_Camel):
    """The serving configuration content the controller wants (generation aside)."""

    stable: str | None = None
    candidate: str | None = None
    shadow_percent: float = 0.0
    canary_percent: float = 0.0
    min_confidence: float = 0.0
    top_k: int = 3
    salt: str = "modelrollout"


class PodSummary(_Camel):
    live: int = 0
    converged: int = 0


class RolloutStatus(_Camel):
    model_config = ConfigDict(frozen=False)

    phase: Phase = Phase.PENDING
    message: str = ""
    stable_version: str | None = None
    candidate_version: str | None = None
    shadow_percent: float = 0.0
    canary_percent: float = 0.0
    step_index: int | None = None
    """Index into the effective canary steps while in Canary; None otherwise."""
    phase_since: datetime | None = None
    candidate_since: datetime | None = None
    candidate_generation: int | None = None
    """servingGeneration that first served the current candidate (load errors older are stale)."""
    paused_phase: Phase | None = None
    observed_generation: int | None = None
    serving_generation: int = 0
    serving: Served | None = None
    pods: PodSummary = Field(default_factory=PodSummary)
    last_analysis: AnalysisResult | None = None
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    passes: int = 0
    quarantined: list[Quarantine] = Field(default_factory=list)
    promotion: Promotion | None = None
    """Set at promotion, cleared when postPromotionWindow has passed or a new rollout starts:
    while set, an alert rolls back to ``promotion.previous``."""
    alerts: list[ReceivedAlert] = Field(default_factory=list)
    """Written by the webhook only; the controller never writes this field."""
    handled_alerts: list[str] = Field(default_factory=list)
    handled_promote: str | None = None
    handled_abort: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    history: list[Decision] = Field(default_factory=list)
    spec_vs_served: list[str] = Field(default_factory=list)

    @field_validator("phase", mode="before")
    @classmethod
    def _unknown_phase_is_pending(cls, value: Any) -> Any:
        return value if value in Phase.__members__.values() else Phase.PENDING


def parse_status(raw: dict[str, Any] | None) -> RolloutStatus:
    """Status as stored; anything unreadable is dropped rather than blocking the rollout.

    Field by field, and in a list entry by entry: one malformed quarantine entry drops
    that entry, never the whole list (which would un-quarantine every version).

    >>> st = parse_status({"quarantined": [{"version": "v1"},
    ...     {"version": "v2", "reason": "AlertFiring", "time": "2026-01-01T00:00:00Z"}]})
    >>> [q.version for q in st.quarantined]
    ['v2']
    """
    if not raw:
        return RolloutStatus()
    try:
        return RolloutStatus.model_validate(raw)
    except ValidationError:
        # A status written by an older controller (or by hand) must never wedge the rollout.
        good: dict[str, Any] = {}
        for key, value in raw.items():
            if _valid_status_field(key, value):
                good[key] = value
            elif isinstance(value, list):
                good[key] = [item for item in value if _valid_status_field(key, [item])]
        return RolloutStatus.model_validate(good)


def _valid_status_field(key: str, value: Any) -> bool:
    try:
        RolloutStatus.model_validate({key: value})
    except ValidationError:
        return False
    return True


def quarantined(status: RolloutStatus, version: str, retry: int) -> Quarantine | None:
    """The quarantine entry that still holds ``version`` back at ``spec.retry == retry``."""
    for entry in status.quarantined:
        if entry.version == version and entry.retry >= retry:
            return entry
    return None
