"""``POST /v1/suggestions``: categories for a batch of transactions."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import ServiceDep
from service.api.schemas import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MessageResponse,
    SuggestionsRequest,
    SuggestionsResponse,
    ValidationErrorResponse,
)
from service.suggest import Batch

router = APIRouter(prefix="/v1", tags=["suggestions"])

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


@router.post(
    "/suggestions",
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
)
async def create_suggestions(
    request: Annotated[SuggestionsRequest, Body(openapi_examples=_EXAMPLES)],
    service: ServiceDep,
) -> Response:
    txns = request.transactions
    batch = Batch(
        ids=[t.id for t in txns],
        merchants=[t.merchant for t in txns],
        memos=[t.memo for t in txns],
        amounts=[t.amount for t in txns],
        user_ids=[t.user_id for t in txns],
    )
    # Small requests are answered on the event loop (a thread hop costs more than the
    # work); large ones on a worker thread, where LightGBM runs without the GIL.
    if len(batch) <= service.settings.inline_rows:
        state, answers = service.suggest(batch)
    else:
        state, answers = await run_in_threadpool(service.suggest, batch)
    body = orjson.dumps({"generation": state.config.generation, "suggestions": answers})
    return Response(body, media_type="application/json")
