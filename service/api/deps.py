"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.runtime import SuggestionService


async def get_service(request: Request) -> SuggestionService:
    # async on purpose: FastAPI runs a plain ``def`` dependency on a worker thread, a
    # thread hop per request that costs more than answering a small request.
    service: SuggestionService = request.app.state.service
    return service


ServiceDep = Annotated[SuggestionService, Depends(get_service)]
