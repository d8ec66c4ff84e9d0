"""``POST /v1/suggestions`` answered in front of the router: the hot path, and only its
valid requests.

A request that reaches FastAPI's route passes ~10 layers (middleware, route matching,
the dependency solver, query-parameter and cookie parsing, telemetry lookups) before the
endpoint runs: in-process ~200 us of a one-transaction request's ~530 us, twice what the
whole of a trivial FastAPI endpoint costs (decision 0007). :class:`SuggestionsFastPath`
is an ASGI middleware that takes ``POST /v1/suggestions`` with a JSON body that
validates, answers it with the same code as the route (:func:`answer_bytes`) and sends the
same bytes and headers.

Everything else goes to the app unchanged: other paths and methods, a body that is not
JSON or does not validate (its body replayed, so the app's 422 and 413 answers are exactly
what they were), and the OpenAPI document, which still describes the route. It sits
inside :class:`~service.api.errors.BodySizeLimit` (bodies are bounded before it reads
them) and inside Starlette's ``ServerErrorMiddleware`` (an unexpected exception is the
same 500 either way).

It also times every answered ``POST /v1/suggestions`` (status 200), whichever path
answered it, into ``modelrollout_suggestion_request_seconds``: the request's server-side
latency, from the app receiving it to the last byte of its answer handed to the server.
"""

from __future__ import annotations

import time
from typing import Final

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import replay
from service.api.schemas import SuggestionsRequest
from service.runtime import SuggestionService
from service.suggest import Batch

SUGGESTIONS_PATH: Final = "/v1/suggestions"

_JSON: Final = b"application/json"


def is_json(content_type: str) -> bool:
    """``application/json`` or an ``application/*+json`` media type, parameters ignored."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


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


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return str(value.decode("latin-1"))
    return ""


class SuggestionsFastPath:
    """Pure ASGI middleware answering valid ``POST /v1/suggestions`` requests itself
    (``answer=False``: only timing them, the route answers)."""

    def __init__(self, app: ASGIApp, service: SuggestionService, *, answer: bool = True) -> None:
        self.app = app
        self.service = service
        self.answer = answer
        self._observe = service.metrics.suggestion_request_seconds.observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SUGGESTIONS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["method"] != "POST" or not self.answer or not is_json(_content_type(scope)):
            await self.app(scope, receive, self._timed(send, started))
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            request = SuggestionsRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replay(body, receive), send)
            return
        content = await answer_bytes(self.service, request)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", _JSON),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
        self._observe(time.perf_counter() - started)

    def _timed(self, send: Send, started: float) -> Send:
        """``send`` that times the answer when it is a 200."""
        status = 0

        async def timed(message: Message) -> None:
            nonlocal status
            await send(message)
            if message["type"] == "http.response.start":
                status = message["status"]
            elif status == 200 and not message.get("more_body", False):
                self._observe(time.perf_counter() - started)

        return timed
