"""The metric contract between the suggestion service and the controller (DESIGN.md contract 5).

The service exports these metrics (``service/metrics.py`` declares them with these names
and labels); the controller's PromQL builder (``controller/promql.py``) queries them. Both
import this module, so a name is written once. Label values are bounded: who served
(:class:`Source`), a model version (a handful are loaded at a time), a category label (the
model's classes), ``"true"``/``"false"``; never a user id, merchant or path.

- ``modelrollout_predictions_total`` (counter; served_by, model_version):
  answers returned
- ``modelrollout_shadow_comparisons_total`` (counter; baseline, baseline_version,
  shadow_version, category, agree): a shadow answer compared with the served one (top-1).
  ``baseline`` is who served and ``baseline_version`` its version (``none`` for rules);
  ``category`` is the *reference* answer, what stable or rules said: the served top-1
  when the candidate is the shadow, the shadow's top-1 when the candidate served (canary),
  so a candidate wrong in one category shows up in that category in every phase
- ``modelrollout_shadow_shed_total`` (counter; reason, shadow_version): shadow rows not
  compared because the shadow's budget could not take them (:class:`ShedReason`); the
  controller sees fewer comparisons, never a false agreement
- ``modelrollout_inference_seconds`` (histogram; role, model_version, path):
  time of one model or rules evaluation; ``path`` is ``served`` when some of its rows were
  answered with it, ``shadow`` when none were (like is compared with like: the controller
  judges a candidate's latency relative to stable's on the ``served`` path only).
  One evaluation is that of one request (or of the small requests
  answered together, :mod:`service.coalesce`; a shadow model's rows of small requests are
  evaluated in groups off the request path, :mod:`service.shadow`)
- ``modelrollout_suggestion_request_seconds`` (histogram; no labels): server-side time of
  an answered ``POST /v1/suggestions`` (status 200), from the app receiving the request
  to its answer handed to the server (:mod:`service.api.suggestions`)
- ``modelrollout_model_errors_total`` (counter; role, model_version):
  a model raised; the request fell back to rules
- ``modelrollout_fallbacks_total`` (counter; reason):
  served by rules although a model was configured
- ``modelrollout_feedback_total`` (counter; served_by, model_version, outcome):
  user feedback on an answer
- ``modelrollout_serving_generation`` (gauge; rollout):
  the serving-configuration generation this process applies
- ``modelrollout_model_loaded`` (gauge; role, model_version):
  1 for each loaded model
- ``modelrollout_model_load_errors_total`` (counter; model_version):
  a version failed verification or loading
- ``modelrollout_model_compilations_total`` (counter; result compiled/published/failed):
  a loaded version's trees compiled to machine code here, loaded from the compiled
  trees its training published, or left on LightGBM's predictor

Every exposed series also carries ``target="<MODELROLLOUT_TARGET>"``
(:data:`TARGET_LABEL`, added at exposition, :meth:`service.metrics.ServiceMetrics.exposition`):
the controller selects it in every query, so two targets scraped by one Prometheus never
feed each other's analysis, whatever labels the scrape configuration attaches.

The original system's alert and panels, over these:

- ``SuggestAgreementDrop``: :data:`AGREEMENT_DROP_EXPR` (agreement below 75% over 1 h).
- agreement gauge: :data:`AGREEMENT_1H`; suggestions by source:
  ``sum by (served_by) (rate(modelrollout_predictions_total[5m]))``; model availability:
  ``max by (role, model_version) (modelrollout_model_loaded)``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

PREFIX: Final = "modelrollout"


class Source(StrEnum):
    """Who served an answer, or which role a model plays."""

    STABLE = "stable"
    CANDIDATE = "candidate"
    RULES = "rules"


class EvaluationPath(StrEnum):
    """Whether an evaluation answered some of its rows (served) or none (shadow)."""

    SERVED = "served"
    SHADOW = "shadow"


class FallbackReason(StrEnum):
    LOW_CONFIDENCE = "low_confidence"
    MODEL_ERROR = "model_error"
    NO_MODEL = "no_model"
    DISABLED = "disabled"


class ShedReason(StrEnum):
    """Why shadow rows were not compared (:mod:`service.shadow`)."""

    CPU_BUDGET = "cpu_budget"  # the queue was full while the worker waited out its CPU share
    QUEUE_FULL = "queue_full"  # the queue was full while the worker was evaluating
    STOPPED = "stopped"  # offered to, or left in, a stopped queue (shutdown)


class FeedbackOutcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


TARGET_LABEL: Final = "target"
"""The label naming the suggestion target on every exposed series."""

NO_VERSION: Final = "none"
"""model_version label value when rules served."""

# Names as Prometheus exposes them (counters carry their _total suffix here; the
# prometheus_client declaration drops it, see service/metrics.py).
PREDICTIONS_TOTAL: Final = f"{PREFIX}_predictions_total"
SHADOW_COMPARISONS_TOTAL: Final = f"{PREFIX}_shadow_comparisons_total"
INFERENCE_SECONDS: Final = f"{PREFIX}_inference_seconds"
SUGGESTION_REQUEST_SECONDS: Final = f"{PREFIX}_suggestion_request_seconds"
MODEL_ERRORS_TOTAL: Final = f"{PREFIX}_model_errors_total"
FALLBACKS_TOTAL: Final = f"{PREFIX}_fallbacks_total"
FEEDBACK_TOTAL: Final = f"{PREFIX}_feedback_total"
SERVING_GENERATION: Final = f"{PREFIX}_serving_generation"
MODEL_LOADED: Final = f"{PREFIX}_model_loaded"
MODEL_LOAD_ERRORS_TOTAL: Final = f"{PREFIX}_model_load_errors_total"
MODEL_COMPILATIONS_TOTAL: Final = f"{PREFIX}_model_compilations_total"
SHADOW_SHED_TOTAL: Final = f"{PREFIX}_shadow_shed_total"

INFERENCE_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

REQUEST_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
"""Fine around the 5 ms p99 that DESIGN.md asks of one suggestion."""

AGREEMENT_1H: Final = (
    f'sum(rate({SHADOW_COMPARISONS_TOTAL}{{agree="true"}}[1h]))'
    f" / sum(rate({SHADOW_COMPARISONS_TOTAL}[1h]))"
)
AGREEMENT_DROP_EXPR: Final = f"({AGREEMENT_1H}) < 0.75"
