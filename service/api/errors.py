"""Bad input gets a clear 413 or 422, never a 500.

- A body above :data:`~service.api.schemas.MAX_BODY_BYTES` is refused with 413 before it is
  read in full (by its Content-Length, or while a chunked body streams in).
- A batch above :data:`~service.api.schemas.MAX_BATCH` transactions is 413, saying the
  limit and how many were sent.
- A body that cannot be decoded (FastAPI's 400) is 422, like any malformed body.
- Any other validation failure is 422 with FastAPI's ``{"detail": [{loc, msg, type}]}``,
  without echoing the input back (it may be megabytes) and at most
  :data:`MAX_REPORTED_ERRORS` entries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.schemas import MAX_BATCH, MAX_BODY_BYTES

MAX_REPORTED_ERRORS: Final = 20
_BATCH_LOC: Final = ("body", "transactions")


def _too_large(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=413)


def _batch_too_large(errors: Sequence[Any]) -> int | None:
    for error in errors:
        if error.get("type") == "too_long" and tuple(error.get("loc", ())) == _BATCH_LOC:
            actual = (error.get("ctx") or {}).get("actual_length")
            return int(actual) if actual is not None else -1
    return None


class BodyInvalid(StarletteHTTPException):
    """A body that did not validate, with pydantic's errors (``loc`` starting at ``"body"``),
    raised where FastAPI would parse it (:mod:`service.api.suggestions`). An
    ``HTTPException`` because FastAPI's request handler re-raises those unchanged while it
    reads the body; answered like a :class:`RequestValidationError`."""

    def __init__(self, errors: Sequence[Any]) -> None:
        super().__init__(status_code=422, detail="the request body did not validate")
        self.errors = list(errors)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, BodyInvalid):
        return _invalid(exc.errors)
    assert isinstance(exc, RequestValidationError)
    return _invalid(exc.errors())


def _invalid(errors: Sequence[Any]) -> JSONResponse:
    too_many = _batch_too_large(errors)
    if too_many is not None:
        sent = f", got {too_many}" if too_many >= 0 else ""
        return _too_large(
            f"a request holds at most {MAX_BATCH} transactions{sent}; split it into batches"
        )
    detail = [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "invalid")),
            "type": str(error.get("type", "value_error")),
        }
        for error in errors[:MAX_REPORTED_ERRORS]
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI answers 400 for a body it cannot decode (not UTF-8); it is malformed: 422."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        return JSONResponse(
            {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": f"the body cannot be read as JSON ({exc.detail})",
                        "type": "body_unreadable",
                    }
                ]
            },
            status_code=422,
        )
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(BodyInvalid, validation_error_handler)


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` giving ``body`` (already read from the client) once more, then whatever
    the client sends next: for an app behind a middleware that had to read the body."""
    replayed = False

    async def replayer() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayer


class BodySizeLimit:
    """Pure ASGI middleware refusing request bodies above ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._message = json.dumps(
            {"detail": f"request body larger than {max_bytes} bytes; send smaller batches"}
        ).encode()

    async def _refuse(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._message)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._message})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
                break
        if length is not None:
            if length > self.max_bytes:
                await self._refuse(send)
                return
            # The server delivers exactly Content-Length bytes; nothing more to check.
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read it here, bounded, then replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(b"".join(chunks), receive), send)
