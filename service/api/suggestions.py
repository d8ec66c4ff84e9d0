"""``POST /v1/suggestions``: categories for a batch of transactions.

One route, one path for every request: FastAPI's own request handler runs (middleware,
dependencies, exception handlers, OpenAPI generated from the signature), with one change
made through FastAPI's documented extension point, a custom ``APIRoute`` class
(:class:`SuggestionsRoute`): the body is parsed and validated in one pass by pydantic's
``model_validate_json`` (FastAPI's body parameter would ``json.loads`` it into Python
objects and then validate those), and the answer is serialised by orjson.

Validation errors keep FastAPI's shape (``{"detail": [{loc, msg, type}]}`` with ``loc``
starting at ``"body"``); a batch above the maximum is 413 (:mod:`service.api.errors`).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.background import BackgroundTask

from service.api.errors import BodyInvalid
from service.api.schemas import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MessageResponse,
    SuggestionsRequest,
    SuggestionsResponse,
    ValidationErrorResponse,
)
from service.runtime import SuggestionService
from service.suggest import Batch

SUGGESTIONS_PATH = "/v1/suggestions"


class _ParsedOnceRequest(Request):
    """A request whose JSON body is a validated :class:`SuggestionsRequest`.

    FastAPI's handler reads ``await request.json()`` for a JSON body and then validates it
    against the body parameter; given the model instance itself, that validation only
    checks its type. A body that does not validate raises :class:`BodyInvalid` (an
    ``HTTPException``, which FastAPI's handler lets through unchanged) with pydantic's
    errors, answered 422 (or 413) by :func:`service.api.errors.body_invalid_handler`.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = SuggestionsRequest.model_validate_json(await self.body())
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_input=False)
                raise BodyInvalid(
                    [{**error, "loc": ("body", *error["loc"])} for error in errors]
                ) from None
        return self._json


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this media type as JSON (none given: it does)."""
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


class SuggestionsRoute(APIRoute):
    """FastAPI's route, with the body parsed once (:class:`_ParsedOnceRequest`) and the
    server-side time of every 200 observed in ``modelrollout_suggestion_request_seconds``:
    from the route receiving the request to its answer handed to the server.

    When nothing is attached to the route (no dependency of its own, its router's or the
    app's: ``dependant.dependencies`` is empty, decided once when the route is built), the
    handler does what FastAPI's would do for it, without the rest: read and validate the
    body, call the endpoint with the request and the body, return its response. FastAPI's
    handler costs ~115 us more a request here (its dependency solver parses the query
    string, cookies and media type and builds a response for headers; measured in-process
    by ``benchmarks/bench_asgi.py``), a third of the whole request. As soon as a dependency
    is attached (an API key, a rate limit), or a body arrives with another media type,
    FastAPI's own handler runs, so nothing attached is ever skipped.
    """

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()
        lean = not self.dependant.dependencies
        endpoint = self.endpoint

        async def parse_once(request: Request) -> Response:
            started = time.perf_counter()
            parsed = _ParsedOnceRequest(request.scope, request.receive)
            response: Response
            if lean and _is_json(request.headers.get("content-type")):
                response = await endpoint(parsed, await parsed.json())
            else:
                response = await handler(parsed)
            if response.status_code == 200 and response.background is None:
                observe = request.app.state.service.metrics.suggestion_request_seconds.observe

                async def answered() -> None:  # async: run on the loop, not in a thread
                    observe(time.perf_counter() - started)

                response.background = BackgroundTask(answered)
            return response

        return parse_once


router = APIRouter(tags=["suggestions"], route_class=SuggestionsRoute)

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
)
async def create_suggestions(
    request: Request,
    body: Annotated[SuggestionsRequest, Body(openapi_examples=_EXAMPLES)],
) -> Response:
    service: SuggestionService = request.app.state.service
    return Response(await answer_bytes(service, body), media_type="application/json")


async def answer_bytes(service: SuggestionService, request: SuggestionsRequest) -> bytes:
    """The response body of a validated request: its answers and the generation that
    answered them, as JSON."""
    txns = request.transactions
    batch = Batch(
        ids=[t.id for t in txns],
        merchants=[t.merchant for t in txns],
        memos=[t.memo for t in txns],
        amounts=[t.amount for t in txns],
        user_ids=[t.user_id for t in txns],
        mccs=[t.mcc for t in txns],
    )
    state, answers = await service.answer(batch)
    return orjson.dumps({"generation": state.config.generation, "suggestions": answers})
