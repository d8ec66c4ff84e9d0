"""The one PromQL builder: every query the controller sends, over service/metric_names.py.

One analysis is one HTTP request: :func:`analysis_query` joins every figure into one
instant-vector expression, each figure tagged with a ``figure`` label by
``label_replace``, and :func:`parse_analysis` reads the answer back into
:class:`~controller.model.Figures`. A figure with no data is absent from the answer and
stays None (the analysis then says why it is inconclusive).

Scope: every selector carries the spec's ``analysis.labelSelector`` matchers, the
rollout's target (``target="<spec.target>"``, a label every suggestion pod puts on every
series it exposes) and the versions involved, so that another rollout's candidate in the
same Prometheus never feeds this one's analysis:

- shadow comparisons where the candidate is the shadow of the stable version or of rules
  (``shadow_version="<candidate>"``, ``baseline_version`` the stable version or ``none``),
  or served a canary answer with the stable version as its shadow (``baseline="candidate"``,
  ``baseline_version="<candidate>"``, ``shadow_version="<stable>"``);
- the candidate's latency, evaluations and errors by ``role="candidate"`` and its
  version (every path: a shadow group's time bounds one request's from above); for the
  bound relative to stable, the candidate's and stable's latency on the ``served`` path
  only (a shadow evaluation covers many requests' rows, so it is no match for a served
  one);
- feedback on answers served by the candidate's version vs by the stable version.

Pure: strings in, strings out.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from controller.model import Figures
from service.metric_names import (
    FEEDBACK_TOTAL,
    INFERENCE_BUCKETS,
    INFERENCE_SECONDS,
    MODEL_ERRORS_TOTAL,
    NO_VERSION,
    SHADOW_COMPARISONS_TOTAL,
    TARGET_LABEL,
    EvaluationPath,
    FeedbackOutcome,
    Source,
)

FIGURE_LABEL: Final = "figure"
_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def quote(value: str) -> str:
    """A PromQL string literal.

    >>> quote('a"b')
    '"a\\\\"b"'
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def matchers(selector: dict[str, str], regex: dict[str, str] | None = None, /, **extra: str) -> str:
    """``{k="v",...}`` from the spec's label selector plus fixed matchers, sorted; ``regex``
    adds ``k=~"re"`` matchers.

    >>> matchers({"namespace": "prod"}, model_version="v2")
    '{model_version="v2",namespace="prod"}'
    >>> matchers({}, {"baseline_version": one_of(["v1.2", "none"])})
    '{baseline_version=~"v1\\\\\\\\.2|none"}'
    """
    merged = {**selector, **extra}
    patterns = regex or {}
    for name in [*merged, *patterns]:
        if not _LABEL_NAME_RE.match(name):
            raise ValueError(f"invalid Prometheus label name {name!r}")
    parts = [(k, f"{k}={quote(v)}") for k, v in merged.items() if k not in patterns]
    parts += [(k, f"{k}=~{quote(v)}") for k, v in patterns.items()]
    return "{" + ",".join(text for _, text in sorted(parts)) + "}"


def one_of(values: list[str]) -> str:
    """A regular expression matching exactly one of ``values`` (PromQL anchors it)."""
    return "|".join(re.escape(v) for v in values)


@dataclass(frozen=True)
class Scope:
    """Which series one analysis reads."""

    candidate: str
    stable: str | None
    window: str
    """A PromQL range such as ``60s``."""
    selector: dict[str, str]
    target: str | None = None
    """The rollout's target (``target`` label); None only in tests of other parts."""
    quantile: float = 0.95
    """The latency quantile judged."""

    def base(self) -> dict[str, str]:
        """The selector plus the target matcher."""
        if self.target is None:
            return dict(self.selector)
        return {**self.selector, TARGET_LABEL: self.target}


def _comparisons(scope: Scope, **extra: str) -> str:
    """Shadow comparisons involving the candidate (as shadow, or as served canary)."""
    base = scope.base()
    references = [scope.stable, NO_VERSION] if scope.stable else [NO_VERSION]
    as_shadow = matchers(
        base, {"baseline_version": one_of(references)}, shadow_version=scope.candidate, **extra
    )
    shadowed = f"increase({SHADOW_COMPARISONS_TOTAL}{as_shadow}[{scope.window}])"
    if scope.stable is None:  # no stable model: a canary answer has no shadow to compare
        return f"({shadowed})"
    as_served = matchers(
        base,
        baseline=Source.CANDIDATE.value,
        baseline_version=scope.candidate,
        shadow_version=scope.stable,
        **extra,
    )
    return f"({shadowed} or increase({SHADOW_COMPARISONS_TOTAL}{as_served}[{scope.window}]))"


def _agreeing_or_zero(scope: Scope) -> str:
    """Agreeing comparisons, with a 0 for every other series so no category drops out."""
    return f"({_comparisons(scope, agree='true')} or ({_comparisons(scope)} * 0))"


def _quantile(scope: Scope, role: Source, version: str, **extra: str) -> str:
    selector = matchers(scope.base(), role=role.value, model_version=version, **extra)
    return (
        f"histogram_quantile({scope.quantile:g}, sum by (le) "
        f"(rate({INFERENCE_SECONDS}_bucket{selector}[{scope.window}])))"
    )


def figure_exprs(scope: Scope) -> dict[str, str]:
    """Each figure's expression, by figure name (tests read them one by one)."""
    total = _comparisons(scope)
    agree = _agreeing_or_zero(scope)
    base = scope.base()
    candidate = matchers(base, role=Source.CANDIDATE.value, model_version=scope.candidate)
    w = scope.window
    feedback_candidate = matchers(
        base, served_by=Source.CANDIDATE.value, model_version=scope.candidate
    )
    feedback = f"increase({FEEDBACK_TOTAL}{feedback_candidate}[{w}])"
    if scope.stable is not None:
        feedback_stable = matchers(base, served_by=Source.STABLE.value, model_version=scope.stable)
        feedback = f"{feedback} or increase({FEEDBACK_TOTAL}{feedback_stable}[{w}])"
    exprs = {
        "samples": f"sum({total})",
        "agreement": f"sum({agree}) / sum({total})",
        "category_agreement": f"sum by (category) ({agree}) / sum by (category) ({total})",
        "category_samples": f"sum by (category) ({total})",
        "latency": _quantile(scope, Source.CANDIDATE, scope.candidate),
        "evaluations": f"sum(increase({INFERENCE_SECONDS}_count{candidate}[{w}]))",
        "errors": f"sum(increase({MODEL_ERRORS_TOTAL}{candidate}[{w}]))",
        "feedback": f"sum by (served_by, outcome) ({feedback})",
    }
    if scope.stable is not None:
        # Like with like for the relative bound: evaluations that answered users.
        served = EvaluationPath.SERVED.value
        exprs["served_latency"] = _quantile(scope, Source.CANDIDATE, scope.candidate, path=served)
        served_selector = matchers(
            base, role=Source.CANDIDATE.value, model_version=scope.candidate, path=served
        )
        # Its +Inf bucket is the count of served evaluations (no second query for it).
        exprs["served_buckets"] = (
            f"sum by (le) (increase({INFERENCE_SECONDS}_bucket{served_selector}[{w}]))"
        )
        exprs["stable_latency"] = _quantile(scope, Source.STABLE, scope.stable, path=served)
    return exprs


def analysis_query(scope: Scope) -> str:
    """All figures in one expression; each series carries ``figure="<name>"``."""
    parts = [
        f'label_replace({expr}, "{FIGURE_LABEL}", "{name}", "", "")'
        for name, expr in figure_exprs(scope).items()
    ]
    return " or ".join(parts)


def custom_query(template: str, scope: Scope) -> str:
    """A user's check with ``{{candidate}}``, ``{{stable}}`` and ``{{window}}`` filled in.

    >>> custom_query('x{v="{{candidate}}"}[{{window}}]', Scope("v2", None, "60s", {}))
    'x{v="v2"}[60s]'
    """
    return (
        template.replace("{{candidate}}", scope.candidate)
        .replace("{{stable}}", scope.stable or "")
        .replace("{{window}}", scope.window)
    )


def sample_value(sample: dict[str, Any]) -> float | None:
    """The float of one ``{"metric":..., "value": [t, "v"]}`` sample; NaN and junk -> None."""
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def first_value(data: dict[str, Any]) -> float | None:
    """The value of a scalar or of the first sample of a vector answer (``data`` part)."""
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list):
        return sample_value({"value": result})
    if isinstance(result, list) and result:
        return sample_value(result[0])
    return None


def wilson_upper(ratio: float, n: float, z: float = 3.0) -> float:
    """The Wilson score upper bound of a proportion ``ratio`` seen in ``n`` trials.

    At 3 sigma, none agreeing in 5 comparisons bounds the agreement below 0.65 (clear
    harm); none agreeing in 2 only below 0.82 (not yet evidence against 0.7).

    >>> round(wilson_upper(0.0, 5), 3), round(wilson_upper(0.0, 2), 3)
    (0.643, 0.818)
    """
    if n <= 0:
        return 1.0
    z2 = z * z
    centre = ratio + z2 / (2 * n)
    spread = z * math.sqrt(max(ratio * (1 - ratio), 0.0) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


EARLY_CATEGORY_SAMPLES: Final = 20
"""Fewest comparisons in a category before its agreement is judged early (below
``minCategorySamples``, on its Wilson bound). The bound treats comparisons as independent
trials; a handful of them is often one or two transactions seen again (a user's repeated
merchant), not evidence: the demo's good model was once rolled back on 4 comparisons of one
category that it answered differently from stable."""


def parse_analysis(
    data: dict[str, Any], *, min_category_samples: int, quantile: float = 0.95
) -> Figures:
    """Figures from the ``data`` of the answer to :func:`analysis_query`.

    The worst category is the one with the lowest agreement among those with at least
    ``min_category_samples`` comparisons; the clear one, the lowest Wilson upper bound
    among those with fewer but at least :data:`EARLY_CATEGORY_SAMPLES` (fewer are noise,
    not evidence).
    """
    single: dict[str, float] = {}
    categories: dict[str, float] = {}
    category_samples: dict[str, float] = {}
    feedback: dict[tuple[str, str], float] = {}
    buckets: dict[float, float] = {}
    for sample in data.get("result") or []:
        metric = sample.get("metric", {})
        value = sample_value(sample)
        if value is None:
            continue
        if metric.get(FIGURE_LABEL) == "served_buckets":
            with contextlib.suppress(ValueError):  # "+Inf" parses as inf
                buckets[float(metric.get("le", ""))] = value
            continue
        if math.isinf(value):
            if metric.get(FIGURE_LABEL) not in ("latency", "served_latency", "stable_latency"):
                continue
            # Beyond the last bucket: its bound is what is known (a lower bound), and a
            # finite number keeps the status JSON valid.
            value = INFERENCE_BUCKETS[-1]
        name = metric.get(FIGURE_LABEL)
        if name == "category_agreement":
            categories[metric.get("category", "")] = value
        elif name == "category_samples":
            category_samples[metric.get("category", "")] = value
        elif name == "feedback":
            feedback[(metric.get("served_by", ""), metric.get("outcome", ""))] = value
        elif isinstance(name, str):
            single[name] = value

    worst: tuple[str, float] | None = None
    clear: tuple[str, float, float, float] | None = None  # category, ratio, n, upper bound
    for cat, ratio in sorted(categories.items()):
        n = category_samples.get(cat, 0.0)
        if n >= min_category_samples:
            if worst is None or ratio < worst[1]:
                worst = (cat, ratio)
        elif n >= EARLY_CATEGORY_SAMPLES:
            bound = wilson_upper(ratio, n)
            if clear is None or bound < clear[3]:
                clear = (cat, ratio, n, bound)

    evaluations = single.get("evaluations")
    errors = single.get("errors")
    error_rate: float | None = None
    if evaluations is not None or errors:
        denominator = max(evaluations or 0.0, errors or 0.0)
        error_rate = (errors or 0.0) / denominator if denominator > 0 else 0.0

    def acceptance(source: Source) -> tuple[float, float | None]:
        acc = feedback.get((source.value, FeedbackOutcome.ACCEPTED.value), 0.0)
        rej = feedback.get((source.value, FeedbackOutcome.REJECTED.value), 0.0)
        n = acc + rej
        return n, (acc / n if n > 0 else None)

    cand_n, cand_rate = acceptance(Source.CANDIDATE)
    _, stable_rate = acceptance(Source.STABLE)
    acceptance_ratio = cand_rate / stable_rate if cand_rate is not None and stable_rate else None

    return Figures(
        samples=single.get("samples"),
        agreement=single.get("agreement"),
        worst_category=worst[0] if worst else None,
        worst_category_agreement=worst[1] if worst else None,
        clear_category=clear[0] if clear else None,
        clear_category_agreement=clear[1] if clear else None,
        clear_category_samples=clear[2] if clear else None,
        clear_category_bound=clear[3] if clear else None,
        latency_quantile=quantile if "latency" in single else None,
        latency_seconds=single.get("latency"),
        served_latency_seconds=single.get("served_latency"),
        served_evaluations=buckets.get(math.inf),
        served_latency_buckets=tuple(sorted(buckets.items())) if buckets else None,
        stable_latency_seconds=single.get("stable_latency"),
        errors=errors if errors is not None or evaluations is None else 0.0,
        error_rate=error_rate,
        evaluations=evaluations,
        feedback_samples=cand_n if feedback else None,
        feedback_acceptance_ratio=acceptance_ratio,
    )
