"""The HTTP API through the ASGI app: suggestions, feedback, models, probes, metrics."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from service import metric_names as names
from service.serving_config import ServingConfig, SuggestMode
from tests.service.conftest import (
    CANDIDATE_VERSION,
    STABLE_VERSION,
    ServeFactory,
    transaction,
)

STABLE_ONLY = ServingConfig(generation=1, stable=STABLE_VERSION, top_k=3)


def test_a_transaction_is_answered_by_the_stable_model(serve: ServeFactory) -> None:
    served = serve(STABLE_ONLY)
    body = served.suggest(transaction(mcc="5411"))  # a card row: grocery store
    assert body["generation"] == 1
    [answer] = body["suggestions"]
    assert answer["id"] == "t1"
    assert answer["served_by"] == "stable"
    assert answer["model_version"] == STABLE_VERSION
    assert answer["rule"] is None
    assert answer["candidates"][0]["label"] == "Groceries"
    confidences = [c["confidence"] for c in answer["candidates"]]
    assert confidences == sorted(confidences, reverse=True)
    assert len(confidences) == 3  # top_k 3, no confidence threshold: always three
    assert answer["event_id"].startswith("e2.")


def test_answers_come_back_in_request_order_each_with_its_own_event(serve: ServeFactory) -> None:
    served = serve(STABLE_ONLY)
    txns = [transaction(f"t{i}", user_id=f"u{i % 7}") for i in range(200)]
    answers = served.suggest(*txns)["suggestions"]
    assert [a["id"] for a in answers] == [t["id"] for t in txns]
    assert len({a["event_id"] for a in answers}) == 200


def test_large_batches_are_answered_off_the_event_loop_with_the_same_result(
    serve: ServeFactory,
) -> None:
    inline = serve(STABLE_ONLY, inline_rows=1000)
    threaded = serve(STABLE_ONLY, inline_rows=1)
    txns = [transaction(f"t{i}", amount=-float(i)) for i in range(50)]

    def strip(body: dict[str, object]) -> list[object]:
        return [
            {k: v for k, v in a.items() if k != "event_id"}  # type: ignore[attr-defined]
            for a in body["suggestions"]  # type: ignore[attr-defined]
        ]

    assert strip(inline.suggest(*txns)) == strip(threaded.suggest(*txns))


def test_rules_answer_when_no_model_is_configured(serve: ServeFactory) -> None:
    served = serve(ServingConfig(generation=3))
    [answer] = served.suggest(transaction(merchant="NETFLIX.COM", memo=""))["suggestions"]
    assert answer["served_by"] == "rules"
    assert answer["model_version"] is None
    assert answer["rule"] == "entertainment-streaming"
    assert answer["candidates"][0] == {"label": "Entertainment", "confidence": 0.95}


def test_feedback_is_counted_by_who_served_and_whether_the_top1_was_kept(
    serve: ServeFactory,
) -> None:
    served = serve(STABLE_ONLY)
    [answer] = served.suggest(transaction())["suggestions"]
    top1 = answer["candidates"][0]["label"]

    kept = served.client.post(
        "/v1/feedback", json={"event_id": answer["event_id"], "accepted_label": top1}
    )
    assert kept.status_code == 200, kept.text
    assert kept.json() == {
        "outcome": "accepted",
        "served_by": "stable",
        "model_version": STABLE_VERSION,
        "suggested": top1,
    }
    [second] = served.suggest(transaction())["suggestions"]
    changed = served.client.post(
        "/v1/feedback", json={"event_id": second["event_id"], "accepted_label": "Rent"}
    )
    assert changed.json()["outcome"] == "rejected"
    labels = {"served_by": "stable", "model_version": STABLE_VERSION}
    assert served.metric(names.FEEDBACK_TOTAL, **labels, outcome="accepted") == 1
    assert served.metric(names.FEEDBACK_TOTAL, **labels, outcome="rejected") == 1


def test_an_event_id_is_counted_once_per_pod(serve: ServeFactory) -> None:
    """Issue 12 point 7: the same id posted again counts nothing (409), on this pod."""
    served = serve(STABLE_ONLY, event_key="shared-secret")
    [answer] = served.suggest(transaction())["suggestions"]
    body = {"event_id": answer["event_id"], "accepted_label": answer["candidates"][0]["label"]}
    assert served.client.post("/v1/feedback", json=body).status_code == 200
    for _ in range(3):
        again = served.client.post("/v1/feedback", json=body)
        assert again.status_code == 409, again.text
        assert "already counted" in again.text
    labels = {"served_by": "stable", "model_version": STABLE_VERSION, "outcome": "accepted"}
    assert served.metric(names.FEEDBACK_TOTAL, **labels) == 1


def test_an_expired_event_id_is_refused(serve: ServeFactory) -> None:
    served = serve(STABLE_ONLY, event_key="shared-secret", event_ttl_seconds=0.001)
    [answer] = served.suggest(transaction())["suggestions"]
    body = {"event_id": answer["event_id"], "accepted_label": "Groceries"}
    response = served.client.post("/v1/feedback", json=body)
    assert response.status_code == 422  # issued in whole seconds: older than 1 ms at once
    assert "expired" in response.text
    assert (
        served.metric(
            names.FEEDBACK_TOTAL,
            served_by="stable",
            model_version=STABLE_VERSION,
            outcome="accepted",
        )
        == 0
    )


def test_feedback_reaches_any_pod(serve: ServeFactory) -> None:
    """Pods are stateless: the event id carries what the count needs."""
    one, other = serve(STABLE_ONLY), serve(STABLE_ONLY)
    [answer] = one.suggest(transaction())["suggestions"]
    response = other.client.post(
        "/v1/feedback",
        json={"event_id": answer["event_id"], "accepted_label": answer["candidates"][0]["label"]},
    )
    assert response.status_code == 200
    labels = {"served_by": "stable", "model_version": STABLE_VERSION, "outcome": "accepted"}
    assert other.metric(names.FEEDBACK_TOTAL, **labels) == 1
    assert one.metric(names.FEEDBACK_TOTAL, **labels) == 0


def test_signed_event_ids_refuse_forgeries(serve: ServeFactory) -> None:
    served = serve(STABLE_ONLY, event_key="shared-secret")
    [answer] = served.suggest(transaction())["suggestions"]
    assert answer["event_id"].count(".") == 4
    forged = answer["event_id"].rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAA"
    response = served.client.post(
        "/v1/feedback", json={"event_id": forged, "accepted_label": "Groceries"}
    )
    assert response.status_code == 422
    assert "signature" in response.text
    unsigned = serve(STABLE_ONLY)  # another key (none): its ids are refused here
    [other] = unsigned.suggest(transaction())["suggestions"]
    response = served.client.post(
        "/v1/feedback", json={"event_id": other["event_id"], "accepted_label": "Groceries"}
    )
    assert response.status_code == 422


def test_models_endpoint_shows_versions_manifests_errors_and_config(
    serve: ServeFactory, models_copy: Path
) -> None:
    config = ServingConfig(
        generation=4, rollout="ns/r", stable=STABLE_VERSION, candidate="v-missing"
    )
    served = serve(config, models=models_copy)
    body = served.client.get("/v1/models").json()
    assert body["generation"] == 4
    assert body["rollout"] == "ns/r"
    assert body["ready"] is True
    assert [(m["role"], m["version"]) for m in body["models"]] == [("stable", STABLE_VERSION)]
    assert body["models"][0]["manifest"]["features"][0] == "amount"
    assert "not found" in body["load_errors"]["v-missing"]
    assert body["config"]["candidate"] == "v-missing"
    assert body["config_source"]["kind"] == "file"
    assert body["pod"] == "test-pod"


def test_probes(serve: ServeFactory) -> None:
    served = serve(STABLE_ONLY)
    assert served.client.get("/healthz").json() == {"status": "ok", "reason": None}
    assert served.client.get("/readyz").status_code == 200


def test_model_mode_is_not_ready_without_its_stable_model(serve: ServeFactory) -> None:
    served = serve(ServingConfig(generation=1, mode=SuggestMode.MODEL, stable="v-missing"))
    response = served.client.get("/readyz")
    assert response.status_code == 503
    assert "v-missing" in response.json()["reason"]
    # Auto mode serves rules in its place, so it is ready.
    assert (
        serve(ServingConfig(generation=1, stable="v-missing")).client.get("/readyz").status_code
        == 200
    )


def test_metrics_expose_the_contract(serve: ServeFactory) -> None:
    served = serve(
        ServingConfig(
            generation=2, stable=STABLE_VERSION, candidate=CANDIDATE_VERSION, shadow_percent=100
        )
    )
    served.suggest(*(transaction(f"t{i}", mcc="5411") for i in range(10)))
    served.settle()  # the shadow is compared on its worker thread, after the answer
    response = served.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        names.PREDICTIONS_TOTAL,
        names.SHADOW_COMPARISONS_TOTAL,
        names.INFERENCE_SECONDS + "_bucket",
        names.SUGGESTION_REQUEST_SECONDS + "_bucket",
        names.MODEL_ERRORS_TOTAL,
        names.FALLBACKS_TOTAL,
        names.SERVING_GENERATION,
        names.MODEL_LOADED,
    ):
        assert f"\n{name}{{" in text, f"{name} missing from /metrics"
    assert served.metric(names.PREDICTIONS_TOTAL, served_by="stable", model_version="v1") == 10
    assert served.metric(names.SERVING_GENERATION, rollout="") == 2
    assert served.metric(names.MODEL_LOADED, role="candidate", model_version="v2") == 1
    compared = sum(
        served.metric(
            names.SHADOW_COMPARISONS_TOTAL,
            baseline="stable",
            baseline_version="v1",
            shadow_version="v2",
            category="Groceries",
            agree=agree,
        )
        for agree in ("true", "false")
    )
    assert compared == 10


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
def test_the_api_is_documented(serve: ServeFactory, path: str) -> None:
    served = serve(STABLE_ONLY)
    response = served.client.get(path)
    assert response.status_code == 200
    if path == "/openapi.json":
        spec = response.json()
        assert {"/v1/suggestions", "/v1/feedback", "/v1/models", "/healthz", "/readyz"} <= set(
            spec["paths"]
        )
        post = spec["paths"]["/v1/suggestions"]["post"]
        assert {"200", "413", "422"} <= set(post["responses"])
        assert post["requestBody"]["content"]["application/json"]["examples"]


def test_a_running_app_keeps_start_up_objects_out_of_garbage_collection(
    serve: ServeFactory,
) -> None:
    serve(STABLE_ONLY)
    # Full collections would otherwise walk every object of the imports (~60-80 ms each).
    assert gc.get_freeze_count() > 100_000
