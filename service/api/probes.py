"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ServiceDep
from service.api.schemas import Probe
from service.serving_config import SuggestMode

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Probe, summary="Liveness: the process answers")
async def healthz() -> Probe:
    return Probe(status="ok")


@router.get(
    "/readyz",
    response_model=Probe,
    summary="Readiness: configured, and the configured models loaded (or failed)",
    description=(
        "Ready once the first serving configuration is applied: every version it names has "
        "loaded or failed (rules serve in place of a failed one). In `model` mode the stable "
        "model is required, so a failed stable keeps the pod unready."
    ),
    responses={503: {"model": Probe, "description": "not ready, with the reason"}},
)
async def readyz(service: ServiceDep) -> Probe | JSONResponse:
    state = service.state
    if state.ready:
        return Probe(status="ready")
    if not state.applied:
        reason = "no serving configuration applied yet"
    elif state.config.mode is SuggestMode.MODEL:
        reason = f"mode 'model' needs the stable version {state.config.stable}, which did not load"
    else:
        reason = "not ready"
    return JSONResponse({"status": "unready", "reason": reason}, status_code=503)
