"""``POST /v1/feedback``: whether the user kept the suggested category."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ServiceDep
from service.api.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    ValidationErrorResponse,
)
from service.events import DuplicateEventError, EventIdError

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    summary="Record feedback on a suggestion",
    description=(
        "Counts the answer named by `event_id` as accepted (the user kept its top-1) or "
        "rejected, by who served it and the model version. Any pod accepts feedback for "
        "any answer: the event id carries what it needs. An id this service did not issue, "
        "altered, or expired (MODELROLLOUT_EVENT_TTL_SECONDS) is 422; feedback on an id "
        "this pod already counted is 409 and counts nothing."
    ),
    responses={
        422: {"model": ValidationErrorResponse, "description": "malformed or expired event id"},
        409: {"description": "feedback on this event id was already counted"},
    },
)
async def record_feedback(
    body: FeedbackRequest, service: ServiceDep
) -> FeedbackResponse | JSONResponse:
    try:
        result = service.feedback(body.event_id, body.accepted_label)
    except EventIdError as exc:
        return JSONResponse(
            {
                "detail": [
                    {
                        "loc": ["body", "event_id"],
                        "msg": f"invalid event id: {exc}",
                        "type": "event_id_invalid",
                    }
                ]
            },
            status_code=422,
        )
    except DuplicateEventError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    return FeedbackResponse(
        outcome=result.outcome,
        served_by=result.served_by,
        model_version=result.model_version,
        suggested=result.suggested,
    )
