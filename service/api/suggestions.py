"""``POST /v1/suggestions``: categories for a batch of transactions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.api.fastpath import SUGGESTIONS_PATH, answer_bytes, is_json
from service.api.schemas import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MessageResponse,
    SuggestionsRequest,
    SuggestionsResponse,
    ValidationErrorResponse,
)
from service.runtime import SuggestionService

router = APIRouter(tags=["suggestions"])

_EXAMPLES: dict[str, Any] = {
    "one": {
        "summary": "one transaction",
        "value": {
            "transactions": [
                {
                    "id": "txn-0001",
                    "merchant": "WHOLEFDS MKT #10233",
                    "memo": "weekly grocery run",
                    "amount": -54.2,
                    "user_id": "u-1842",
                }
            ]
        },
    },
    "batch": {
        "summary": "a batch",
        "value": {
            "transactions": [
                {
                    "id": "a",
                    "merchant": "UBER *TRIP",
                    "memo": "",
                    "amount": -21.5,
                    "user_id": "u-1",
                },
                {
                    "id": "b",
                    "merchant": "ACME CORP PAYROLL",
                    "memo": "salary",
                    "amount": 3200.0,
                    "user_id": "u-1",
                },
            ]
        },
    },
}


_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/SuggestionsRequest"},
            "examples": _EXAMPLES,
        }
    },
}
"""The request body as FastAPI would document a ``SuggestionsRequest`` body parameter; the
schemas it refers to are added by :func:`request_schemas`."""


def request_schemas() -> dict[str, Any]:
    """``SuggestionsRequest`` and the schemas it uses, for the OpenAPI document's
    ``components.schemas``."""
    schema = SuggestionsRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {**defs, "SuggestionsRequest": schema}


async def parse_request(request: Request) -> SuggestionsRequest:
    """The validated body: pydantic parses and validates the bytes in one pass (FastAPI's
    body parameter would ``json.loads`` them and then validate the objects). Errors are
    FastAPI's, with ``loc`` starting at ``"body"``, so the 413/422 handlers see them alike."""
    if not is_json(request.headers.get("content-type", "")):
        raise RequestValidationError(
            [
                {
                    "loc": ("body",),
                    "msg": "the body must be JSON (Content-Type: application/json)",
                    "type": "content_type",
                }
            ]
        )
    try:
        return SuggestionsRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


@router.post(
    SUGGESTIONS_PATH,
    response_model=SuggestionsResponse,
    summary="Suggest categories for transactions",
    description=(
        f"Answers each transaction (1..{MAX_BATCH} per request, body at most "
        f"{MAX_BODY_BYTES} bytes) with its top-K categories and confidences, who served it "
        "(stable or candidate model, or rules), the model version or rule, and an event id "
        "for feedback. A user's transactions stay on one model while a canary runs."
    ),
    responses={
        413: {"model": MessageResponse, "description": "too many transactions or too large"},
        422: {"model": ValidationErrorResponse, "description": "malformed request"},
    },
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def create_suggestions(request: Request) -> Response:
    # Valid JSON requests are answered by service.api.fastpath before they get here (unless
    # MODELROLLOUT_FAST_PATH is off); this route documents the operation, refuses bad
    # requests and answers the rest with the same code.
    body = await parse_request(request)
    service: SuggestionService = request.app.state.service
    return Response(await answer_bytes(service, body), media_type="application/json")
