"""``POST /v1/suggestions`` has one path (service/api/suggestions.py): FastAPI's route
(its handler's work done without the dependency solver while nothing is attached), the
body parsed once. Whatever is attached to the app or the route later
(middleware, dependencies, a mount prefix) applies to every request, valid or not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import fastapi.routing
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from opentelemetry import trace
from starlette.types import Message

from service import metric_names as names
from service.api import suggestions
from service.api.errors import install_error_handlers
from service.api.schemas import SuggestionsRequest
from service.api.suggestions import SUGGESTIONS_PATH, SuggestionsRoute
from service.app import create_app
from service.serving_config import ServingConfig
from tests.service.conftest import (
    CANDIDATE_VERSION,
    STABLE_VERSION,
    Served,
    ServeFactory,
    TestClient,
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


@pytest.fixture
def served(serve: ServeFactory) -> Served:
    return serve(STABLE_ONLY)


def valid_body(n: int = 3) -> bytes:
    return json.dumps({"transactions": [transaction(f"t{i}") for i in range(n)]}).encode()


def test_an_answer_is_json_with_its_length_and_every_kind_of_source(serve: ServeFactory) -> None:
    served = serve(CANARY_AND_SHADOW)
    txns = [
        transaction(f"t{i}", merchant=m, memo=d, amount=a, user_id=f"u{i}")
        for i, (m, d, a) in enumerate(
            [
                ("WHOLEFDS MKT #10233", "weekly grocery run", -54.2),
                ("UBER *TRIP", "", -21.5),
                ("ACME PAYROLL", "salary", 3200.0),
                ("XYZ 123", "", -1.0),
            ]
            * 15
        )
    ]
    response = served.client.post("/v1/suggestions", json={"transactions": txns})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert body["generation"] == CANARY_AND_SHADOW.generation
    assert [s["id"] for s in body["suggestions"]] == [t["id"] for t in txns]
    assert {s["served_by"] for s in body["suggestions"]} == {"stable", "candidate", "rules"}
    assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_count") == 1
    assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_sum") > 0


def test_the_body_is_parsed_and_validated_once(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    original = SuggestionsRequest.model_validate_json

    def counting(data: Any, **kwargs: Any) -> SuggestionsRequest:
        calls.append(data)
        return original(data, **kwargs)

    monkeypatch.setattr(SuggestionsRequest, "model_validate_json", counting)
    body = valid_body(2)
    response = served.client.post(
        "/v1/suggestions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert calls == [body]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{}", "application/json", 422),
        (b'{"transactions": [{"id": 1}]}', "application/json", 422),
        (b"not json", "application/json", 422),
        (b"", "application/json", 422),
        (valid_body(1001), "application/json", 413),
        (valid_body(1), "text/plain", 422),
    ],
    ids=["no key", "wrong type", "not json", "empty", "too many", "media type"],
)
def test_bad_requests_are_refused_and_not_timed(
    served: Served, body: bytes, content_type: str, status: int
) -> None:
    response = served.client.post(
        "/v1/suggestions", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_count") == 0


def test_middleware_added_to_the_app_sees_every_request(served: Served) -> None:
    app = create_app(service=served.service)  # the running service, a second app
    seen: list[tuple[str, int]] = []

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        seen.append((request.url.path, response.status_code))
        return response

    client = TestClient(app)  # no lifespan: the service is already started
    ok = client.post("/v1/suggestions", json={"transactions": [transaction()]})
    bad = client.post("/v1/suggestions", json={"transactions": []})
    assert (ok.status_code, bad.status_code) == (200, 422)
    assert seen == [(SUGGESTIONS_PATH, 200), (SUGGESTIONS_PATH, 422)]


def test_a_route_dependency_runs_for_valid_requests_and_can_refuse_them(served: Served) -> None:
    """The route class keeps FastAPI's handler: dependencies attached to the router (here:
    an API key) run before the endpoint, for valid bodies too."""

    def api_key(x_api_key: str = Header(default="")) -> None:
        if x_api_key != "secret":
            raise HTTPException(status_code=401, detail="no key")

    app = FastAPI()
    app.state.service = served.service
    router = APIRouter(route_class=SuggestionsRoute, dependencies=[Depends(api_key)])
    for route in suggestions.router.routes:
        assert isinstance(route, SuggestionsRoute)
        router.add_api_route(route.path, route.endpoint, methods=list(route.methods))
    app.include_router(router)
    install_error_handlers(app)
    client = TestClient(app)
    payload = {"transactions": [transaction()]}
    assert client.post("/v1/suggestions", json=payload).status_code == 401
    ok = client.post("/v1/suggestions", json=payload, headers={"x-api-key": "secret"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["suggestions"][0]["served_by"] == "stable"


def test_fastapis_dependency_solver_runs_only_when_something_is_attached(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing attached: the route does FastAPI's work for it without the solver (it has
    nothing to solve). A dependency attached, or a body of another media type: FastAPI's
    handler runs (the dependency test above shows it applies)."""
    solved: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].headers.get("content-type", ""))
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    payload = {"transactions": [transaction()]}
    assert served.client.post("/v1/suggestions", json=payload).status_code == 200
    assert solved == []
    odd = served.client.post(
        "/v1/suggestions", content=valid_body(1), headers={"content-type": "text/plain"}
    )
    assert odd.status_code == 422
    assert solved == ["text/plain"]

    app = FastAPI()
    app.state.service = served.service
    router = APIRouter(route_class=SuggestionsRoute, dependencies=[Depends(lambda: None)])
    for route in suggestions.router.routes:
        assert isinstance(route, SuggestionsRoute)
        router.add_api_route(route.path, route.endpoint, methods=list(route.methods))
    app.include_router(router)
    assert TestClient(app).post("/v1/suggestions", json=payload).status_code == 200
    assert solved == ["text/plain", "application/json"]


def test_the_app_mounted_under_a_prefix_answers_the_same(served: Served) -> None:
    outer = FastAPI()
    outer.mount("/suggest", served.client.app)
    client = TestClient(outer)
    response = client.post("/suggest/v1/suggestions", json={"transactions": [transaction()]})
    assert response.status_code == 200, response.text
    assert response.json()["suggestions"][0]["served_by"] == "stable"
    assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_count") == 1


def test_the_openapi_document_describes_the_body_from_the_model(served: Served) -> None:
    document = served.client.get("/openapi.json").json()
    operation = document["paths"][SUGGESTIONS_PATH]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/SuggestionsRequest"}
    assert set(content["examples"]) == {"one", "batch"}
    schemas = document["components"]["schemas"]
    assert schemas["SuggestionsRequest"]["required"] == ["transactions"]
    assert "Transaction" in schemas
    assert {"200", "413", "422"} <= set(operation["responses"])


def drive(app: Any, chunks: Sequence[bytes], *, disconnect: bool) -> list[Message]:
    """Call ``app`` with ``POST /v1/suggestions`` whose body arrives in ``chunks`` (then,
    if ``disconnect``, the client leaves); the messages it sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": SUGGESTIONS_PATH,
        "raw_path": SUGGESTIONS_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "app": app,
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

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:  # Starlette re-raises after answering 500
            sent.append({"type": "raised", "error": repr(exc)})

    asyncio.run(run())
    return sent


def test_a_body_in_pieces_is_answered(served: Served) -> None:
    body = valid_body()
    sent = drive(served.client.app, [body[:10], body[10:40], body[40:]], disconnect=False)
    start, content = sent[0], sent[1]
    assert start["status"] == 200
    answer = json.loads(content["body"])
    assert [s["id"] for s in answer["suggestions"]] == ["t0", "t1", "t2"]


def test_a_client_that_leaves_mid_body_is_not_answered_and_nothing_is_counted(
    served: Served,
) -> None:
    labels = {"served_by": "stable", "model_version": STABLE_VERSION}
    served.suggest(transaction())
    before = served.metric(names.PREDICTIONS_TOTAL, **labels)
    assert before == 1
    drive(served.client.app, [valid_body()[:20]], disconnect=True)
    assert served.metric(names.PREDICTIONS_TOTAL, **labels) == before
    assert served.metric(names.SUGGESTION_REQUEST_SECONDS + "_count") == 1


class _RecordingTracerProvider(trace.TracerProvider):
    """An OpenTelemetry tracer provider that records the names of the spans started."""

    def __init__(self) -> None:
        self.spans: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        spans = self.spans

        class Recording(trace.NoOpTracer):
            def start_span(self, name: str, *a: Any, **k: Any) -> trace.Span:
                spans.append(name)
                return super().start_span(name, *a, **k)

        return Recording()


@pytest.mark.parametrize("enabled", [False, True], ids=["default", "MODELROLLOUT_OPENTELEMETRY"])
def test_fastapis_opentelemetry_traces_requests_only_when_turned_on(
    served: Served, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    provider = _RecordingTracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    settings = served.service.settings.model_copy(update={"opentelemetry": enabled})
    monkeypatch.setattr(served.service, "settings", settings)
    client = TestClient(create_app(service=served.service))  # the running service
    response = client.post("/v1/suggestions", json={"transactions": [transaction()]})
    assert response.status_code == 200, response.text
    assert provider.spans[:1] == (["POST"] if enabled else [])
