"""The serving configuration: the one document the controller writes and every pod obeys.

DESIGN.md contract 3. The controller writes it into a ConfigMap named
:func:`configmap_name` (key :data:`CONFIGMAP_KEY`, JSON), owned by the ModelRollout. Every
suggestion pod of the target watches that ConfigMap through the API server and applies a
new document without restarting (models are loaded off the request path, then swapped).

Each pod reports what it serves in a ``coordination.k8s.io/v1`` Lease named
:func:`lease_name`, labelled :data:`TARGET_LABEL`, whose annotation :data:`REPORT_ANNOTATION`
holds a :class:`PodReport` as JSON. The controller lists those Leases to tell whether a change
has converged (every live pod reports the desired generation) and whether a version failed to
load. A Lease whose ``renewTime + leaseDurationSeconds`` has passed belongs to a pod that is
gone and is ignored. Leases work the same for real pods and for the test bed's processes,
and need no mesh and no pod IP.

This module is pure: no Kubernetes, FastAPI or network imports.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

API_GROUP: Final = "modelrollout.io"
CONFIGMAP_KEY: Final = "serving.json"
TARGET_LABEL: Final = "modelrollout.io/target"
ROLLOUT_LABEL: Final = "modelrollout.io/rollout"
REPORT_ANNOTATION: Final = "modelrollout.io/serving-report"
LEASE_DURATION_SECONDS: Final = 15
"""A pod renews its Lease at least every third of this; an older Lease is a gone pod."""

BUCKETS: Final = 10_000
"""Canary buckets: a user is in the canary when its bucket < canary_percent * 100."""

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ModelVersion = Annotated[str, Field(pattern=_VERSION_RE.pattern)]
Percent = Annotated[float, Field(ge=0.0, le=100.0)]


class SuggestMode(StrEnum):
    """Who may serve: rules only, the model only (rules when it has no answer), or both."""

    HEURISTIC = "heuristic"
    MODEL = "model"
    AUTO = "auto"


class ServingConfig(BaseModel):
    """What every pod of a target serves. Immutable; a change is a new document.

    ``generation`` grows with every change the controller writes; a pod reports the
    generation it has applied, which is how convergence is seen.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rollout: str | None = Field(
        default=None, description="namespace/name of the ModelRollout that wrote this, if any"
    )
    generation: int = Field(default=0, ge=0)
    enabled: bool = True
    mode: SuggestMode = SuggestMode.AUTO
    stable: ModelVersion | None = Field(default=None, description="None: rules only")
    candidate: ModelVersion | None = None
    shadow_percent: Percent = 0.0
    canary_percent: Percent = 0.0
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    top_k: int = Field(default=3, ge=1, le=20)
    salt: str = Field(default="modelrollout", min_length=1, max_length=128)

    @model_validator(mode="after")
    def _candidate_differs(self) -> Self:
        if self.candidate is not None and self.candidate == self.stable:
            raise ValueError(f"candidate and stable are the same version {self.candidate!r}")
        if self.canary_percent > 0 and self.candidate is None:
            raise ValueError("canary_percent > 0 needs a candidate version")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> ServingConfig:
        return cls.model_validate_json(text)


class PodReport(BaseModel):
    """What one pod says about itself in its Lease annotation."""

    model_config = ConfigDict(extra="ignore")

    pod: str
    generation: int = Field(ge=0)
    rollout: str | None = None
    loaded: dict[str, str] = Field(
        default_factory=dict, description="role (stable, candidate) -> loaded model version"
    )
    load_errors: dict[str, str] = Field(
        default_factory=dict, description="model version -> why it could not be loaded"
    )


def configmap_name(target: str) -> str:
    """The ConfigMap that carries the serving configuration of a target.

    >>> configmap_name("suggest")
    'suggest-serving'
    """
    return f"{target}-serving"


def lease_name(target: str, pod: str) -> str:
    """The Lease in which one pod of a target reports what it serves (a DNS-1123 name).

    >>> lease_name("suggest", "suggest-7d9f-abc12")
    'suggest-pod-suggest-7d9f-abc12'
    """
    raw = f"{target}-pod-{pod}".lower()
    return re.sub(r"[^a-z0-9.-]", "-", raw)[:253].strip("-.")
