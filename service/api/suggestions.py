"""``POST /v1/suggestions``: categories for a batch of transactions.

One route, one path for every request: FastAPI's route (middleware, dependencies,
exception handlers, OpenAPI generated from the signature), changed through FastAPI's
documented extension point, a custom ``APIRoute`` class (:class:`SuggestionsRoute`): the
body is parsed and validated in one pass by pydantic's ``model_validate_json`` (FastAPI's
body parameter would ``json.loads`` it into Python objects and then validate those), what
FastAPI's handler would do with nothing attached is done without its dependency solver,
and the answer is serialised by orjson. The app adds the route to its own router
(:func:`add_route`).

Validation errors keep FastAPI's shape (``{"detail": [{loc, msg, type}]}`` with ``loc``
starting at ``"body"``); a batch above the maximum is 413 (:mod:`service.api.errors`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any

import orjson
import starlette.routing
from fastapi import APIRouter, Body, Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

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


_STARTED = "modelrollout.started"
"""The scope key holding when the route received the request (``time.perf_counter``)."""


class _TimedResponse(Response):
    """An answer that observes, once it is handed to the server, how long the request took
    since ``started`` (``modelrollout_suggestion_request_seconds``). A subclass rather than
    a ``BackgroundTask``: nothing to schedule, one call after the body is sent."""

    def __init__(self, content: bytes, started: float, observe: Callable[[float], None]) -> None:
        super().__init__(content, media_type="application/json")
        self._started = started
        self._observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        self._observe(time.perf_counter() - self._started)


class SuggestionsRoute(APIRoute):
    """FastAPI's route, with the body parsed once (:class:`_ParsedOnceRequest`) and the
    server-side time of every 200 observed in ``modelrollout_suggestion_request_seconds``:
    from the route receiving the request to its answer handed to the server.

    When nothing is attached to the route (no dependency of its own, its router's or the
    app's: ``dependant.dependencies`` is empty, decided once when the route is built), the
    handler does what FastAPI's would do for it, without the rest: read and validate the
    body, call the endpoint with the request and the body, return its response; and the
    route's ASGI app is Starlette's ``request_response`` around it, which FastAPI's copies
    but for two ``AsyncExitStack`` per request that only dependencies with ``yield`` and
    file parameters use (there are none). FastAPI's handler and wrapper cost ~115 us more
    a request here (its dependency solver parses the query string, cookies and media
    type and builds a response for headers; measured in-process by
    ``benchmarks/bench_asgi.py``), a third of the whole request. As soon as a dependency
    is attached (an API key, a rate limit), FastAPI's handler and wrapper run for every
    request, and FastAPI's handler for a body of another media type, so nothing attached
    is ever skipped.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.dependant.dependencies:
            self.app = starlette.routing.request_response(self.get_route_handler())

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()
        lean = not self.dependant.dependencies
        endpoint = self.endpoint

        async def parse_once(request: Request) -> Response:
            request.scope[_STARTED] = time.perf_counter()
            parsed = _ParsedOnceRequest(request.scope, request.receive)
            if not lean:  # FastAPI's wrapper runs this route: its stacks are in the scope
                return await handler(parsed)
            if _is_json(request.headers.get("content-type")):
                response: Response = await endpoint(parsed, await parsed.json())
                return response
            # Another media type: FastAPI's handler, with the stacks its wrapper would have
            # made (nothing is registered on them: the route has no dependencies).
            async with AsyncExitStack() as inner, AsyncExitStack() as function:
                request.scope["fastapi_inner_astack"] = inner
                request.scope["fastapi_function_astack"] = function
                return await handler(parsed)

        return parse_once


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


async def create_suggestions(
    request: Request,
    body: Annotated[SuggestionsRequest, Body(openapi_examples=_EXAMPLES)],
) -> Response:
    service: SuggestionService = request.app.state.service
    content = await answer_bytes(service, body)
    started = request.scope.get(_STARTED)
    if started is None:  # the endpoint on a route of another class: not timed
        return Response(content, media_type="application/json")
    return _TimedResponse(content, started, service.metrics.suggestion_request_seconds.observe)


def add_route(router: APIRouter) -> None:
    """Add ``POST /v1/suggestions`` to ``router``. The app adds it to its own router
    (``app.router``), not through ``include_router``: FastAPI matches an included router's
    routes through a layer of its own, ~30 us a request here (``benchmarks/bench_asgi.py``)."""
    router.add_api_route(
        SUGGESTIONS_PATH,
        create_suggestions,
        methods=["POST"],
        route_class_override=SuggestionsRoute,
        tags=["suggestions"],
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


router = APIRouter()
"""The endpoint on a router of its own, for apps that compose it (``include_router``)."""
add_route(router)


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
