"""Bad input gets a clear 413 or 422, never a 500, and never changes what is served."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from service import metric_names as names
from service.api.schemas import MAX_BATCH, MAX_BODY_BYTES
from service.serving_config import ServingConfig
from tests.service.conftest import STABLE_VERSION, Served, ServeFactory, transaction


@pytest.fixture
def served(serve: ServeFactory) -> Served:
    return serve(ServingConfig(generation=1, stable=STABLE_VERSION))


def with_field(**changes: Any) -> dict[str, Any]:
    txn = transaction()
    for key, value in changes.items():
        if value is ...:
            del txn[key]
        else:
            txn[key] = value
    return {"transactions": [txn]}


@pytest.mark.parametrize(
    ("case", "body", "where"),
    [
        ("no transactions key", {}, ["body", "transactions"]),
        ("empty batch", {"transactions": []}, ["body", "transactions"]),
        ("transactions not a list", {"transactions": {"id": "x"}}, ["body", "transactions"]),
        ("a transaction not an object", {"transactions": ["t1"]}, ["body", "transactions", 0]),
        ("missing id", with_field(id=...), ["body", "transactions", 0, "id"]),
        ("missing amount", with_field(amount=...), ["body", "transactions", 0, "amount"]),
        ("missing user", with_field(user_id=...), ["body", "transactions", 0, "user_id"]),
        ("empty id", with_field(id=""), ["body", "transactions", 0, "id"]),
        ("id too long", with_field(id="x" * 129), ["body", "transactions", 0, "id"]),
        (
            "merchant too long",
            with_field(merchant="m" * 257),
            ["body", "transactions", 0, "merchant"],
        ),
        ("memo too long", with_field(memo="m" * 1025), ["body", "transactions", 0, "memo"]),
        ("amount as text", with_field(amount="12.5"), ["body", "transactions", 0, "amount"]),
        ("amount as bool", with_field(amount=True), ["body", "transactions", 0, "amount"]),
        ("amount null", with_field(amount=None), ["body", "transactions", 0, "amount"]),
        ("amount huge", with_field(amount=1e300), ["body", "transactions", 0, "amount"]),
        ("merchant a number", with_field(merchant=12), ["body", "transactions", 0, "merchant"]),
        ("user id a number", with_field(user_id=7), ["body", "transactions", 0, "user_id"]),
        ("extra field", with_field(colour="red"), ["body", "transactions", 0, "colour"]),
        ("extra top-level field", {**with_field(), "debug": True}, ["body", "debug"]),
    ],
)
def test_a_malformed_request_is_422_naming_the_field(
    served: Served, case: str, body: dict[str, Any], where: list[str | int]
) -> None:
    response = served.client.post("/v1/suggestions", json=body)
    assert response.status_code == 422, case
    detail = response.json()["detail"]
    assert any(d["loc"] == where for d in detail), (case, detail)
    assert all(set(d) == {"loc", "msg", "type"} for d in detail)  # the input is not echoed


RAW = b'{"transactions": [{"id": %s, "merchant": "m", "amount": %s, "user_id": "u"}]}'
SHORT_PAYLOAD = "e1.WyJzdGFibGUiLCJ2MSJd.AAAAAAAAAAAA"  # ["stable", "v1"]: two parts, not three
UNKNOWN_SOURCE = "e1.WyJib3NzIiwidjEiLCJEaW5pbmciXQ.AAAAAAAAAAAA"  # ["boss", "v1", "Dining"]


@pytest.mark.parametrize(
    ("case", "raw"),
    [
        ("not JSON", b"{not json"),
        ("truncated JSON", b'{"transactions": [{"id": "t1"'),
        ("JSON null", b"null"),
        ("a JSON list", b"[]"),
        ("NaN amount", RAW % (b'"a"', b"NaN")),
        ("Infinity amount", RAW % (b'"a"', b"Infinity")),
        ("overflowing amount", RAW % (b'"a"', b"1e999")),
        ("invalid UTF-8", RAW % (b'"\xff\xfe"', b"1")),
        ("empty body", b""),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_valid_document_is_422(served: Served, case: str, raw: bytes) -> None:
    response = served.client.post(
        "/v1/suggestions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, (case, response.text)


def test_a_body_of_another_media_type_is_422(served: Served) -> None:
    response = served.client.post(
        "/v1/suggestions",
        content=json.dumps({"transactions": [transaction()]}),
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 422


def test_more_than_the_maximum_batch_is_413_saying_the_limit(served: Served) -> None:
    txns = [transaction(f"t{i}") for i in range(MAX_BATCH + 1)]
    response = served.client.post("/v1/suggestions", json={"transactions": txns})
    assert response.status_code == 413
    message = response.json()["detail"]
    assert f"at most {MAX_BATCH} transactions" in message
    assert f"got {MAX_BATCH + 1}" in message
    # Exactly the maximum is fine.
    ok = served.client.post("/v1/suggestions", json={"transactions": txns[:MAX_BATCH]})
    assert ok.status_code == 200
    assert len(ok.json()["suggestions"]) == MAX_BATCH


def test_a_body_above_the_size_limit_is_413_before_it_is_parsed(served: Served) -> None:
    raw = b'{"transactions": [' + b" " * MAX_BODY_BYTES + b"]}"
    response = served.client.post(
        "/v1/suggestions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_chunked_body_above_the_size_limit_is_413(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"transactions": ['
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536
        yield b"]}"

    response = served.client.post(
        "/v1/suggestions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_a_chunked_body_within_the_limit_is_served(served: Served) -> None:
    payload = json.dumps({"transactions": [transaction()]}).encode()

    def chunks() -> Iterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    response = served.client.post(
        "/v1/suggestions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("missing event id", {"accepted_label": "Groceries"}),
        ("missing label", {"event_id": "e1.x.y"}),
        ("not an event id", {"event_id": "hello", "accepted_label": "Groceries"}),
        ("wrong prefix", {"event_id": "e9.abc.def", "accepted_label": "Groceries"}),
        ("bad base64", {"event_id": "e1.!!!.???", "accepted_label": "Groceries"}),
        ("not JSON inside", {"event_id": "e1.bm90anNvbg.AAAAAAAAAAAA", "accepted_label": "X"}),
        ("short payload", {"event_id": SHORT_PAYLOAD, "accepted_label": "X"}),
        ("unknown source", {"event_id": UNKNOWN_SOURCE, "accepted_label": "X"}),
        ("too long", {"event_id": "e1." + "A" * 600, "accepted_label": "X"}),
        ("label too long", {"event_id": "e1.x.y", "accepted_label": "L" * 200}),
        ("extra field", {"event_id": "e1.x.y", "accepted_label": "X", "score": 1}),
    ],
)  # fmt: skip
def test_malformed_feedback_is_422_and_counts_nothing(
    served: Served, case: str, body: dict[str, Any]
) -> None:
    response = served.client.post("/v1/feedback", json=body)
    assert response.status_code == 422, (case, response.text)
    assert "feedback" not in _counted(served), case


def _counted(served: Served) -> set[str]:
    return {
        metric.name
        for metric in served.service.metrics.registry.collect()
        if metric.name == names.FEEDBACK_TOTAL.removesuffix("_total") and metric.samples
    }


def test_unknown_paths_and_methods_are_4xx(served: Served) -> None:
    assert served.client.get("/v1/suggestions").status_code == 405
    assert served.client.post("/v2/suggestions", json={}).status_code == 404
    assert served.client.delete("/v1/models").status_code == 405
