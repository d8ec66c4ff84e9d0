"""``GET /v1/models``: what this process serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import ServiceDep
from service.api.schemas import ServingDescription

router = APIRouter(prefix="/v1", tags=["serving"])


@router.get(
    "/models",
    response_model=ServingDescription,
    summary="Loaded model versions, load errors, and the serving configuration",
)
async def describe_serving(service: ServiceDep) -> dict[str, Any]:
    return service.describe()
