"""The one PromQL builder: every query the controller sends, over service/metric_names.py.

One analysis is one HTTP request: :func:`analysis_query` joins every figure into one
instant-vector expression, each figure tagged with a ``figure`` label by
``label_replace``, and :func:`parse_analysis` reads the answer back into
:class:`~controller.model.Figures`. A figure with no data is absent from the answer and
stays None (the analysis then says why it is inconclusive).

Scope: every selector carries the spec's ``analysis.labelSelector`` matchers and the
candidate's version: shadow comparisons where the candidate is the shadow
(``shadow_version="<candidate>"``) or served the answer (``baseline="candidate"``, canary
traffic with the stable version as shadow); latency, evaluations and errors by
``model_version="<candidate>"``; feedback on answers served by the candidate vs by stable.

Pure: strings in, strings out.
"""

from __future__ import annotations

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
    SHADOW_COMPARISONS_TOTAL,
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


def matchers(selector: dict[str, str], **extra: str) -> str:
    """``{k="v",...}`` from the spec's label selector plus fixed matchers, sorted.

    >>> matchers({"namespace": "prod"}, model_version="v2")
    '{model_version="v2",namespace="prod"}'
    """
    merged = {**selector, **extra}
    for name in merged:
        if not _LABEL_NAME_RE.match(name):
            raise ValueError(f"invalid Prometheus label name {name!r}")
    inner = ",".join(f"{k}={quote(v)}" for k, v in sorted(merged.items()))
    return "{" + inner + "}"


@dataclass(frozen=True)
class Scope:
    """Which series one analysis reads."""

    candidate: str
    stable: str | None
    window: str
    """A PromQL range such as ``60s``."""
    selector: dict[str, str]


def _comparisons(scope: Scope, **extra: str) -> str:
    """Shadow comparisons involving the candidate (as shadow, or as served canary)."""
    as_shadow = matchers(scope.selector, shadow_version=scope.candidate, **extra)
    as_served = matchers(scope.selector, baseline=Source.CANDIDATE.value, **extra)
    return (
        f"(increase({SHADOW_COMPARISONS_TOTAL}{as_shadow}[{scope.window}])"
        f" or increase({SHADOW_COMPARISONS_TOTAL}{as_served}[{scope.window}]))"
    )


def _agreeing_or_zero(scope: Scope) -> str:
    """Agreeing comparisons, with a 0 for every other series so no category drops out."""
    return f"({_comparisons(scope, agree='true')} or ({_comparisons(scope)} * 0))"


def figure_exprs(scope: Scope) -> dict[str, str]:
    """Each figure's expression, by figure name (tests read them one by one)."""
    total = _comparisons(scope)
    agree = _agreeing_or_zero(scope)
    version = matchers(scope.selector, model_version=scope.candidate)
    w = scope.window
    feedback_candidate = matchers(
        scope.selector, served_by=Source.CANDIDATE.value, model_version=scope.candidate
    )
    feedback_stable = matchers(scope.selector, served_by=Source.STABLE.value)
    return {
        "samples": f"sum({total})",
        "agreement": f"sum({agree}) / sum({total})",
        "category_agreement": f"sum by (category) ({agree}) / sum by (category) ({total})",
        "category_samples": f"sum by (category) ({total})",
        "latency_p95": (
            f"histogram_quantile(0.95, sum by (le) "
            f"(rate({INFERENCE_SECONDS}_bucket{version}[{w}])))"
        ),
        "evaluations": f"sum(increase({INFERENCE_SECONDS}_count{version}[{w}]))",
        "errors": f"sum(increase({MODEL_ERRORS_TOTAL}{version}[{w}]))",
        "feedback": (
            f"sum by (served_by, outcome) (increase({FEEDBACK_TOTAL}{feedback_candidate}[{w}])"
            f" or increase({FEEDBACK_TOTAL}{feedback_stable}[{w}]))"
        ),
    }


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


def parse_analysis(data: dict[str, Any], *, min_category_samples: int) -> Figures:
    """Figures from the ``data`` of the answer to :func:`analysis_query`.

    The worst category is the one with the lowest agreement among those with at least
    ``min_category_samples`` comparisons (fewer are noise, not evidence).
    """
    single: dict[str, float] = {}
    categories: dict[str, float] = {}
    category_samples: dict[str, float] = {}
    feedback: dict[tuple[str, str], float] = {}
    for sample in data.get("result") or []:
        metric = sample.get("metric", {})
        value = sample_value(sample)
        if value is None:
            continue
        if math.isinf(value):
            if metric.get(FIGURE_LABEL) != "latency_p95":
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
    for cat, ratio in sorted(categories.items()):
        if category_samples.get(cat, 0.0) >= min_category_samples and (
            worst is None or ratio < worst[1]
        ):
            worst = (cat, ratio)

    evaluations = single.get("evaluations")
    errors = single.get("errors", 0.0)
    error_rate: float | None = None
    if evaluations is not None or errors > 0:
        denominator = max(evaluations or 0.0, errors)
        error_rate = errors / denominator if denominator > 0 else 0.0

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
        latency_p95_seconds=single.get("latency_p95"),
        error_rate=error_rate,
        evaluations=evaluations,
        feedback_samples=cand_n if feedback else None,
        feedback_acceptance_ratio=acceptance_ratio,
    )
