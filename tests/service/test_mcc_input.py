"""The optional ``mcc`` of a transaction: four digits naming a known ISO 18245 code, or a
422 naming the field; an absent or null one changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from service.serving_config import ServingConfig
from tests.service.conftest import STABLE_VERSION, Served, ServeFactory, transaction

MCC_FIELD = ["body", "transactions", 0, "mcc"]


@pytest.fixture
def served(serve: ServeFactory) -> Served:
    return serve(ServingConfig(generation=1, stable=STABLE_VERSION))


def post(served: Served, **txn: Any) -> Any:
    return served.client.post("/v1/suggestions", json={"transactions": [transaction() | txn]})


@pytest.mark.parametrize(
    ("case", "mcc", "says"),
    [
        ("three digits", "541", "four digits"),
        ("five digits", "54111", "four digits"),
        ("letters", "54A1", "four digits"),
        ("non-ASCII digits", "٥٤١١", "four digits"),
        ("empty", "", "four digits"),
        ("a number, not a string", 5411, "string"),
        ("unknown code", "0001", "not an ISO 18245 merchant category code"),
        ("unknown code in the assigned ranges", "5410", "not an ISO 18245"),
    ],
)
def test_a_bad_mcc_is_422_naming_the_field(served: Served, case: str, mcc: Any, says: str) -> None:
    response = post(served, mcc=mcc)
    assert response.status_code == 422, case
    detail = response.json()["detail"]
    assert [d["loc"] for d in detail] == [MCC_FIELD], (case, detail)
    assert says in detail[0]["msg"], (case, detail)


@pytest.mark.parametrize("mcc", ["5411", "3000", "3999", None])
def test_a_known_or_absent_mcc_is_answered(served: Served, mcc: str | None) -> None:
    response = post(served, mcc=mcc)
    assert response.status_code == 200, response.text
    assert response.json()["suggestions"][0]["candidates"]


def test_an_absent_mcc_changes_nothing(served: Served) -> None:
    without = served.client.post("/v1/suggestions", json={"transactions": [transaction()]})
    with_null = post(served, mcc=None)
    strip = [{k: v for k, v in s.items() if k != "event_id"} for s in without.json()["suggestions"]]
    strip_null = [
        {k: v for k, v in s.items() if k != "event_id"} for s in with_null.json()["suggestions"]
    ]
    assert strip == strip_null
