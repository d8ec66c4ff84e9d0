"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.runtime import SuggestionService


def get_service(request: Request) -> SuggestionService:
    service: SuggestionService = request.app.state.service
    return service


ServiceDep = Annotated[SuggestionService, Depends(get_service)]
