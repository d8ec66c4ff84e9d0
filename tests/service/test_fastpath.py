"""The fast path of ``POST /v1/suggestions`` (service/api/fastpath.py): valid requests are
answered in front of the router with what the route would answer; everything else reaches
the app with its body intact, so bad input gets exactly the answers it got before."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from service import metric_names as names
from service.api.fastpath import SUGGESTIONS_PATH, SuggestionsFastPath
from service.serving_config import ServingConfig
from tests.service.conftest import (
    CANDIDATE_VERSION,
    STABLE_VERSION,
    Served,
    ServeFactory,
    transaction,
)

STABLE_ONLY = ServingConfig(generation=3, stable=STABLE_VERSION)
CANARY_AND_SHADOW = ServingConfig(
    generation=4,
    stable=STABLE_VERSION,
    candidate=CANDIDATE_VERSION,
    canary_percent=40,
    shadow_percent=50,
    min_confidence=0.6,
    top_k=2,
)


def without_event_ids(body: dict[str, Any]) -> dict[str, Any]:
    """The response without its event ids (each holds a random part)."""
    return {
        **body,
        "suggestions": [
            {k: v for k, v in s.items() if k != "event_id"} for s in body["suggestions"]
        ],
    }


def test_on_and_off_answer_the_same(serve: ServeFactory) -> None:
    fast = serve(CANARY_AND_SHADOW)
    routed = serve(CANARY_AND_SHADOW, fast_path=False)
    txns = [
        transaction(f"t{i}", merchant=m, memo=d, amount=a, user_id=f"u{i}")
        for i, (m, d, a) in enumerate(
            [
                ("WHOLEFDS MKT #10233", "weekly grocery run", -54.2),
                ("UBER *TRIP", "", -21.5),
                ("NETFLIX.COM", "", -15.49),
                ("ACME PAYROLL", "salary", 3200.0),
                ("ZELLE TO JOHN SMITH", "march rent", -2300.0),
                ("XYZ 123", "", -1.0),
            ]
            * 10
        )
    ]
    answers = []
    for served in (fast, routed):
        response = served.client.post("/v1/suggestions", json={"transactions": txns})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        answers.append(response.json())
        # Either way the request's server-side time is observed once.
        assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_count") == 1
        assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_sum") > 0
    assert without_event_ids(answers[0]) == without_event_ids(answers[1])
    sources = {s["served_by"] for s in answers[0]["suggestions"]}
    assert sources == {"stable", "candidate", "rules"}  # every kind of answer compared
    # The event ids of either path are redeemed alike.
    for served, body in zip((fast, routed), answers, strict=True):
        first = body["suggestions"][0]
        feedback = served.client.post(
            "/v1/feedback",
            json={"event_id": first["event_id"], "accepted_label": "Groceries"},
        )
        assert feedback.status_code == 200, feedback.text
        assert feedback.json()["served_by"] == first["served_by"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{}", {}),
        (b'{"transactions": []}', {}),
        (b'{"transactions": [{"id": 1}]}', {}),
        (b"not json", {}),
        (b"\xff\xfe", {}),
        (
            json.dumps({"transactions": [transaction(f"t{i}") for i in range(1001)]}).encode(),
            {},
        ),
        (json.dumps({"transactions": [transaction()]}).encode(), {"content-type": "text/plain"}),
    ],
    ids=["no key", "empty", "wrong type", "not json", "not utf-8", "too many", "media type"],
)
def test_bad_requests_get_the_same_answer_on_and_off(
    serve: ServeFactory, body: bytes, headers: dict[str, str]
) -> None:
    answers = []
    for served in (serve(STABLE_ONLY), serve(STABLE_ONLY, fast_path=False)):
        response = served.client.post(
            "/v1/suggestions",
            content=body,
            headers={"content-type": "application/json", **headers},
        )
        answers.append((response.status_code, response.headers["content-type"], response.json()))
        assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_count") == 0  # not answered
    assert answers[0] == answers[1]
    assert answers[0][0] in (413, 422)


class Recorder:
    """An inner ASGI app that answers ``status`` and records what reached it."""

    def __init__(self, status: int = 299) -> None:
        self.status = status
        self.calls: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        if scope["type"] == "http" and scope["method"] == "POST":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        self.calls.append((scope["path"], body))
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def drive(
    app: Any,
    chunks: Sequence[bytes],
    *,
    method: str = "POST",
    path: str = SUGGESTIONS_PATH,
    content_type: bytes = b"application/json",
    disconnect: bool = False,
) -> list[Message]:
    """Call ``app`` with a request whose body arrives in ``chunks`` (then, if
    ``disconnect``, the client leaves instead of ending it); the messages it sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", content_type)],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    incoming: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or disconnect}
        for i, c in enumerate(chunks)
    ]
    if disconnect:
        incoming.append({"type": "http.disconnect"})
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


@pytest.fixture
def served(serve: ServeFactory) -> Served:
    return serve(STABLE_ONLY)


def valid_body(n: int = 3) -> bytes:
    return json.dumps({"transactions": [transaction(f"t{i}") for i in range(n)]}).encode()


def test_a_valid_request_never_reaches_the_app(served: Served) -> None:
    inner = Recorder()
    body = valid_body()
    sent = drive(SuggestionsFastPath(inner, served.service), [body[:10], body[10:40], body[40:]])
    assert inner.calls == []
    start, content = sent
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-length"] == str(len(content["body"])).encode()
    answer = json.loads(content["body"])
    assert answer["generation"] == STABLE_ONLY.generation
    assert [s["id"] for s in answer["suggestions"]] == ["t0", "t1", "t2"]
    assert {s["served_by"] for s in answer["suggestions"]} == {"stable"}


@pytest.mark.parametrize("body", [b'{"transactions": [{"id": 1}]}', b"[1, 2", b""])
def test_an_invalid_body_reaches_the_app_byte_for_byte(served: Served, body: bytes) -> None:
    inner = Recorder()
    sent = drive(SuggestionsFastPath(inner, served.service), [body[:5], body[5:]])
    assert inner.calls == [(SUGGESTIONS_PATH, body)]
    assert sent[0]["status"] == 299


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("GET", SUGGESTIONS_PATH, b"application/json"),
        ("POST", "/v1/feedback", b"application/json"),
        ("POST", SUGGESTIONS_PATH + "/", b"application/json"),
        ("POST", SUGGESTIONS_PATH, b"text/plain"),
    ],
)
def test_other_requests_pass_through_unread(
    served: Served, method: str, path: str, content_type: bytes
) -> None:
    inner = Recorder()
    body = valid_body(1)
    sent = drive(
        SuggestionsFastPath(inner, served.service),
        [body],
        method=method,
        path=path,
        content_type=content_type,
    )
    assert inner.calls == [(path, body if method == "POST" else b"")]
    assert sent[0]["status"] == 299


def test_a_client_that_leaves_mid_body_gets_nothing_and_nothing_is_counted(
    served: Served,
) -> None:
    inner = Recorder()
    labels = {"served_by": "stable", "model_version": STABLE_VERSION}
    served.suggest(transaction())
    before = served.metric(names.PREDICTIONS_TOTAL, **labels)
    assert before == 1
    body = valid_body()
    sent = drive(SuggestionsFastPath(inner, served.service), [body[:20]], disconnect=True)
    assert sent == []
    assert inner.calls == []
    assert served.metric(names.PREDICTIONS_TOTAL, **labels) == before
    assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_count") == 1


@pytest.mark.parametrize(("status", "timed"), [(200, 1), (422, 0)])
def test_with_answering_off_valid_requests_reach_the_route_and_answers_are_timed(
    served: Served, status: int, timed: int
) -> None:
    inner = Recorder(status)
    body = valid_body()
    sent = drive(SuggestionsFastPath(inner, served.service, answer=False), [body])
    assert inner.calls == [(SUGGESTIONS_PATH, body)]
    assert sent[0]["status"] == status
    assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_count") == timed
