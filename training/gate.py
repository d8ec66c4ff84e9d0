"""The evaluation gate: whether a trained model may be published. Pure.

It reads manifest-style metrics (:meth:`training.evaluate.Evaluation.manifest_metrics`),
so a baseline is simply another version's ``manifest.json`` metrics. Checks, in order:

1. held-out macro-F1 >= ``min_macro_f1``;
2. when ``require_beat_rules`` (the default): macro-F1 > the rule engine's macro-F1 on the
   same rows + ``min_margin_over_rules`` (skipped, and said so, when the rules were not
   scored). A model that the rules beat is not worth serving (see
   ``docs/decisions/0002-training-gate-and-rules.md``); turned off, the comparison is
   still reported and recorded in the manifest;
3. when a baseline is given and ``min_margin_over_baseline`` is set: macro-F1 >=
   the baseline's + that margin.

Worked example: ``macro_f1=0.86``, ``rules_macro_f1=0.62``, baseline ``0.85``, margin
``0.02``: checks 1 and 2 pass, check 3 fails (0.86 < 0.87), so the gate fails.

``enforce=False`` (deliberately bad models for rollback tests) still evaluates every
check and reports it, but lets the model through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

MetricValue = float | dict[str, float] | list[list[int]]
"""A value of ``Manifest.metrics``: a number, a per-class map, or the confusion matrix."""


class GateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enforce: bool = True
    min_macro_f1: float = Field(default=0.75, ge=0.0, le=1.0)
    require_beat_rules: bool = True
    min_margin_over_rules: float = Field(default=0.0, ge=0.0, le=1.0)
    min_margin_over_baseline: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="None: do not compare with a baseline"
    )


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    detail: str
    required: bool = True
    """An unrequired check is reported, never fails the gate."""


@dataclass(frozen=True)
class GateDecision:
    checks: tuple[GateCheck, ...]
    enforced: bool

    @property
    def checks_passed(self) -> bool:
        return all(c.passed or not c.required for c in self.checks)

    @property
    def publish(self) -> bool:
        """Whether the model may be published (always, when not enforced)."""
        return self.checks_passed or not self.enforced

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(c.detail for c in self.checks if c.required and not c.passed)

    def summary(self) -> str:
        lines = [
            f"{'pass' if c.passed else 'FAIL' if c.required else 'info'}  {c.name}: {c.detail}"
            for c in self.checks
        ]
        if not self.checks_passed and not self.enforced:
            lines.append("gate not enforced: publishing anyway")
        return "\n".join(lines)


class GateRejectedError(Exception):
    """The gate failed: nothing was published."""

    def __init__(self, decision: GateDecision) -> None:
        super().__init__("evaluation gate failed: " + "; ".join(decision.failures))
        self.decision = decision


def _number(metrics: Mapping[str, MetricValue], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) else None


def evaluate_gate(
    metrics: Mapping[str, MetricValue],
    config: GateConfig,
    baseline: Mapping[str, MetricValue] | None = None,
    baseline_name: str = "baseline",
) -> GateDecision:
    """Run the checks of the module doc over a candidate's (and a baseline's) metrics."""
    checks: list[GateCheck] = []
    f1 = _number(metrics, "macro_f1")
    if f1 is None:
        checks.append(GateCheck("min_macro_f1", False, "the metrics have no macro_f1"))
        return GateDecision(tuple(checks), config.enforce)

    checks.append(
        GateCheck(
            "min_macro_f1",
            f1 >= config.min_macro_f1,
            f"macro-F1 {f1:.4f} {'>=' if f1 >= config.min_macro_f1 else '<'} "
            f"threshold {config.min_macro_f1:.4f}",
        )
    )

    rules = _number(metrics, "rules_macro_f1")
    if rules is None:
        if config.require_beat_rules:
            checks.append(GateCheck("beats_rules", True, "rules not scored; check skipped"))
    else:
        margin = config.min_margin_over_rules
        ok = f1 > rules + margin
        detail = f"macro-F1 {f1:.4f} {'>' if ok else '<='} rules {rules:.4f}"
        if margin:
            detail += f" + margin {margin:.4f}"
        checks.append(GateCheck("beats_rules", ok, detail, required=config.require_beat_rules))

    if config.min_margin_over_baseline is not None and baseline is not None:
        base = _number(baseline, "macro_f1")
        if base is None:
            checks.append(
                GateCheck(
                    "beats_baseline", False, f"{baseline_name} has no macro_f1 to compare with"
                )
            )
        else:
            needed = base + config.min_margin_over_baseline
            ok = f1 >= needed
            checks.append(
                GateCheck(
                    "beats_baseline",
                    ok,
                    f"macro-F1 {f1:.4f} {'>=' if ok else '<'} {baseline_name} {base:.4f} "
                    f"+ margin {config.min_margin_over_baseline:.4f}",
                )
            )
    return GateDecision(tuple(checks), config.enforce)


@dataclass(frozen=True)
class Proposal:
    propose: bool
    reason: str


def proposal_decision(
    metrics: Mapping[str, MetricValue],
    stable: Mapping[str, MetricValue] | None,
    margin: float,
    stable_name: str = "stable",
) -> Proposal:
    """Whether to propose a published model to a rollout whose stable has ``stable`` metrics.

    With no stable version there is nothing to beat. Otherwise the new macro-F1 must be
    at least the stable's + ``margin``: 0.84 against 0.82 with margin 0.01 is proposed,
    0.83 against 0.82 with margin 0.02 is not.
    """
    f1 = _number(metrics, "macro_f1")
    if f1 is None:
        return Proposal(False, "not proposed: the new model has no macro_f1")
    if stable is None:
        return Proposal(True, "proposed: the rollout has no stable version to beat")
    base = _number(stable, "macro_f1")
    if base is None:
        return Proposal(False, f"not proposed: {stable_name} has no macro_f1 to compare with")
    if f1 >= base + margin:
        return Proposal(
            True, f"proposed: macro-F1 {f1:.4f} >= {stable_name} {base:.4f} + {margin:.4f}"
        )
    return Proposal(
        False, f"not proposed: macro-F1 {f1:.4f} < {stable_name} {base:.4f} + {margin:.4f}"
    )
